"""The account on disk: its files and batch jobs in one SQLite file beside their bytes.

The account outlives the process: ``serve --sandbox`` under an MCP client that starts a new server per
tool call must find, in the next process, the job the last one submitted. Several processes may use one
folder at once, so every change is one SQLite statement or one ``BEGIN IMMEDIATE`` transaction (WAL
mode: readers never wait), and the work done lazily for a job (its input check, its result files) is
recorded first-wins, so two processes that raced agree on what was recorded. Nothing is cached between
calls: each request reads the rows it needs, so what another process wrote is seen at once.
"""

from __future__ import annotations

import math
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import msgspec
from pydantic import BaseModel

from batch_mcp.sandbox.config import SandboxConfig
from batch_mcp.sandbox.results import LineFormat
from batch_mcp.sandbox.validation import InputCheck

LEDGER_FILE = "sandbox.sqlite3"
SCHEMA_VERSION = 1
#: How long a statement waits for another process's write transaction before it fails.
BUSY_TIMEOUT_S = 10.0
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS files (
        file_id TEXT PRIMARY KEY, file_name TEXT NOT NULL, path TEXT NOT NULL, purpose TEXT NOT NULL,
        created_at REAL NOT NULL, upload_deadline REAL, size INTEGER, expires_at REAL)""",
    """CREATE TABLE IF NOT EXISTS jobs (  -- AUTOINCREMENT: a deleted job's seq is never handed out again
        seq INTEGER PRIMARY KEY AUTOINCREMENT, batch_id TEXT NOT NULL UNIQUE, idempotency_key TEXT UNIQUE,
        request TEXT NOT NULL, input_file_id TEXT NOT NULL, input_path TEXT NOT NULL,
        created_at REAL NOT NULL, window_s REAL NOT NULL, pace TEXT NOT NULL,
        output_file_id TEXT NOT NULL, error_file_id TEXT NOT NULL,
        cancel_requested_at REAL, input_check TEXT, results TEXT)""",
    "CREATE INDEX IF NOT EXISTS jobs_by_input ON jobs (input_file_id)",
    "CREATE INDEX IF NOT EXISTS jobs_by_output ON jobs (output_file_id)",
    "CREATE INDEX IF NOT EXISTS jobs_by_error ON jobs (error_file_id)",
)
UPLOAD, RESULT = "batch", "batch_output"  # the purposes of input files and of result files
Record = TypeVar("Record")


def new_id() -> str:
    return str(uuid.uuid4())


@dataclass
class StoredFile:
    file_id: str
    file_name: str
    path: Path
    created_at: float
    #: When its upload URL stops working (presigned uploads only); a fault may move it earlier.
    upload_deadline: float = math.inf
    #: Size of the completed upload; ``None`` until one completed (the create-time HEAD check).
    size: int | None = None
    purpose: str = UPLOAD
    #: When the service deletes it (OpenAI-family files); ``None``: never.
    expires_at: float | None = None


@dataclass(frozen=True)
class Pace:
    """Seconds a job spends in each phase, fixed when it is created so its timeline never changes after."""

    validating_s: float
    queued_s: float
    requests_per_s: float
    finalizing_s: float
    cancelling_s: float

    @classmethod
    def of(cls, config: SandboxConfig) -> Pace:
        return cls(config.validating_s, config.queued_s, config.requests_per_s, config.finalizing_s,
                   config.cancelling_s)


@dataclass
class Job:
    """One batch job as last read from the ledger."""

    batch_id: str
    #: The create body in the emulated API's own model, kept for echoing back and idempotent replays.
    request: Any
    input_file_id: str
    #: The input's bytes, which outlive the file's deletion from the account while the job needs them.
    input_path: Path
    lines: LineFormat
    created_at: float
    #: Length of this job's completion window.
    window_s: float
    pace: Pace
    output_file_id: str
    error_file_id: str
    seq: int = 0  # creation order across every process, for newest-first listing and cursors
    cancel_requested_at: float | None = None
    check: InputCheck | None = None
    #: Result file paths by file id, once written.
    results: dict[str, Path] | None = None


class Records(Mapping[str, Record], Generic[Record]):
    """A live, read-only view of some of the ledger's records: each lookup reads the file."""

    def __init__(self, load: Callable[[str], Record | None], keys: Callable[[], list[str]]) -> None:
        self._load, self._keys = load, keys

    def __getitem__(self, key: str) -> Record:
        found = self._load(key)
        if found is None:
            raise KeyError(key)
        return found

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())


class Ledger:
    """The account's rows in ``root/sandbox.sqlite3``; file paths are stored relative to ``root``.

    ``request_model`` revives a job's stored create body; ``line_format`` gives the lines that body reads.
    One connection serves every thread of the process (the server's and a test's), one call at a time.
    """

    def __init__(self, root: Path, request_model: type[BaseModel], line_format: Callable[[Any], LineFormat]) -> None:
        self.root = root
        self._request_model, self._line_format = request_model, line_format
        self._lock = threading.Lock()
        self._db = _open(root / LEDGER_FILE)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that holds the file's write lock from its first statement on."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _run(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    # --- files -------------------------------------------------------------------------------------

    def add_file(self, record: StoredFile) -> None:
        with self._lock:
            _insert_file(self._db, record, self._relative(record.path))

    def file(self, file_id: str, purpose: str) -> StoredFile | None:
        rows = self._run("SELECT * FROM files WHERE file_id = ? AND purpose = ?", file_id, purpose)
        return self._file(rows[0]) if rows else None

    def file_ids(self, purpose: str) -> list[str]:
        return [row[0] for row in self._run("SELECT file_id FROM files WHERE purpose = ? ORDER BY rowid", purpose)]

    def uploaded_count(self) -> int:
        return int(self._run("SELECT count(*) FROM files WHERE purpose = ? AND size IS NOT NULL", UPLOAD)[0][0])

    def set_size(self, file_id: str, size: int) -> None:
        self._run("UPDATE files SET size = ? WHERE file_id = ?", size, file_id)

    def cap_upload_deadlines(self, deadline: float) -> None:
        self._run("UPDATE files SET upload_deadline = min(coalesce(upload_deadline, ?1), ?1) WHERE purpose = ?2",
                  deadline, UPLOAD)

    def delete_file(self, file_id: str) -> bool:
        """Drop the record; return whether a job still reads its bytes (which then must stay)."""
        with self._transaction() as db:
            db.execute("DELETE FROM files WHERE file_id = ?", (file_id,))
            return db.execute("SELECT 1 FROM jobs WHERE input_file_id = ? LIMIT 1", (file_id,)).fetchone() is not None

    def _file(self, row: sqlite3.Row) -> StoredFile:
        deadline = row["upload_deadline"]
        return StoredFile(row["file_id"], row["file_name"], self.root / row["path"], row["created_at"],
                          math.inf if deadline is None else deadline, row["size"], row["purpose"], row["expires_at"])

    # --- jobs --------------------------------------------------------------------------------------

    def add_job(self, job: Job, key: str | None) -> Job:
        """Record the job, unless one already holds the idempotency ``key``: return the one that does.

        The request is stored as it was sent (unset fields left out), so the one revived equals a replay;
        ``job.check`` with it when the API checked the input on arrival."""
        with self._transaction() as db:
            if key is not None and (held := db.execute("SELECT * FROM jobs WHERE idempotency_key = ?",
                                                       (key,)).fetchone()) is not None:
                return self._job(held)
            job.seq = db.execute(
                "INSERT INTO jobs (batch_id, idempotency_key, request, input_file_id, input_path, created_at,"
                " window_s, pace, output_file_id, error_file_id, input_check)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (job.batch_id, key, job.request.model_dump_json(exclude_unset=True), job.input_file_id,
                 self._relative(job.input_path), job.created_at, job.window_s, msgspec.json.encode(job.pace),
                 job.output_file_id, job.error_file_id, None if job.check is None else msgspec.json.encode(job.check)),
            ).lastrowid or 0
        return job

    def job(self, batch_id: str) -> Job | None:
        rows = self._run("SELECT * FROM jobs WHERE batch_id = ?", batch_id)
        return self._job(rows[0]) if rows else None

    def job_with_key(self, key: str) -> Job | None:
        rows = self._run("SELECT * FROM jobs WHERE idempotency_key = ?", key)
        return self._job(rows[0]) if rows else None

    def job_with_result(self, file_id: str) -> Job | None:
        """The job that names ``file_id`` as its output or error file."""
        rows = self._run("SELECT * FROM jobs WHERE output_file_id = ?1 OR error_file_id = ?1", file_id)
        return self._job(rows[0]) if rows else None

    def jobs(self) -> list[Job]:
        """Every job, newest first."""
        return [self._job(row) for row in self._run("SELECT * FROM jobs ORDER BY seq DESC")]

    def job_ids(self) -> list[str]:
        return [row[0] for row in self._run("SELECT batch_id FROM jobs ORDER BY seq")]

    def delete_job(self, batch_id: str) -> list[Path] | None:
        """Drop the job and its published result files: return the bytes nothing reads any more (its
        results, and its input unless a file record or another job holds it), or ``None`` if it was gone."""
        with self._transaction() as db:
            row = db.execute("SELECT * FROM jobs WHERE batch_id = ?", (batch_id,)).fetchone()
            if row is None:
                return None
            db.execute("DELETE FROM files WHERE purpose = ? AND file_id IN (?, ?)",
                       (RESULT, row["output_file_id"], row["error_file_id"]))
            db.execute("DELETE FROM jobs WHERE batch_id = ?", (batch_id,))
            input_held = db.execute(
                "SELECT 1 FROM files WHERE file_id = ?1 UNION ALL SELECT 1 FROM jobs WHERE input_file_id = ?1 LIMIT 1",
                (row["input_file_id"],),
            ).fetchone()
        results = [] if row["results"] is None else list(self._paths(row["results"]).values())
        return results + ([] if input_held else [self.root / row["input_path"]])

    def stored_check(self, batch_id: str) -> InputCheck | None:
        stored = self._run("SELECT input_check FROM jobs WHERE batch_id = ?", batch_id)[0][0]
        return None if stored is None else msgspec.json.decode(stored, type=InputCheck)

    def record_check(self, batch_id: str, check: InputCheck) -> InputCheck:
        """Keep the first check recorded for the job (a racing process may have made one): return it."""
        self._run("UPDATE jobs SET input_check = ? WHERE batch_id = ? AND input_check IS NULL",
                  msgspec.json.encode(check), batch_id)
        stored = self.stored_check(batch_id)
        assert stored is not None
        return stored

    def record_cancel(self, batch_id: str, at: float) -> float:
        """Keep the first cancel request: return when it was made."""
        self._run("UPDATE jobs SET cancel_requested_at = ? WHERE batch_id = ? AND cancel_requested_at IS NULL",
                  at, batch_id)
        return float(self._run("SELECT cancel_requested_at FROM jobs WHERE batch_id = ?", batch_id)[0][0])

    def stored_results(self, batch_id: str) -> dict[str, Path] | None:
        rows = self._run("SELECT results FROM jobs WHERE batch_id = ?", batch_id)
        return None if not rows or rows[0][0] is None else self._paths(rows[0][0])

    def record_results(self, batch_id: str, written: dict[str, Path], published: list[StoredFile]
                       ) -> dict[str, Path] | None:
        """Keep the first result files recorded for the job, publishing ``published`` with them: return
        the files kept (``written`` unless another process recorded its own first), or ``None`` if
        another process deleted the job meanwhile."""
        with self._transaction() as db:
            row = db.execute("SELECT results FROM jobs WHERE batch_id = ?", (batch_id,)).fetchone()
            if row is None:
                return None
            if row[0] is not None:
                return self._paths(row[0])
            db.execute("UPDATE jobs SET results = ? WHERE batch_id = ?",
                       (msgspec.json.encode({key: self._relative(path) for key, path in written.items()}), batch_id))
            for record in published:
                _insert_file(db, record, self._relative(record.path))
        return written

    def _paths(self, stored: str) -> dict[str, Path]:
        return {key: self.root / path for key, path in msgspec.json.decode(stored, type=dict[str, str]).items()}

    def _job(self, row: sqlite3.Row) -> Job:
        request = self._request_model.model_validate_json(row["request"])
        check, results = row["input_check"], row["results"]
        return Job(
            row["batch_id"], request, row["input_file_id"], self.root / row["input_path"],
            self._line_format(request), row["created_at"], row["window_s"],
            msgspec.json.decode(row["pace"], type=Pace), row["output_file_id"], row["error_file_id"], row["seq"],
            row["cancel_requested_at"], None if check is None else msgspec.json.decode(check, type=InputCheck),
            None if results is None else self._paths(results),
        )


def _insert_file(db: sqlite3.Connection, record: StoredFile, path: str) -> None:
    deadline = None if math.isinf(record.upload_deadline) else record.upload_deadline
    db.execute("INSERT INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
               (record.file_id, record.file_name, path, record.purpose, record.created_at, deadline,
                record.size, record.expires_at))


class LedgerVersionError(RuntimeError):
    """The folder was written by a newer batch-mcp, whose rows this one could misread."""


def _open(path: Path) -> sqlite3.Connection:
    """Connect in WAL mode and create the schema if no process has yet (in one write transaction)."""
    db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    try:
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")  # durable across a crash of the process, not of the machine
        db.execute("BEGIN IMMEDIATE")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise LedgerVersionError(f"the sandbox account {path} was written by a newer batch-mcp (schema "
                                     f"v{version}); upgrade batch-mcp, or move the folder {path.parent} aside")
        for statement in _SCHEMA:
            db.execute(statement)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        db.close()
        raise
    return db
