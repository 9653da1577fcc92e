"""Durable job store: every upload, planned create call and batch the server has seen, in SQLite.

Users run jobs over days and restart their IDE in between, so the server must never forget a job it
created and never submit one twice. The create call's ``request_id`` (the API's idempotency key) is
stored *before* the call: after a crash between "request sent" and "answer stored", the pending
submission is re-sent with the same ``request_id`` and the API answers with the batch it already made.

One connection is shared by the event loop and worker threads; a lock serialises statements within
the process, ``BEGIN IMMEDIATE`` plus a busy timeout serialise writers across processes (two IDE
windows may run two servers on one state folder), and submission claims (:mod:`.claims`) make one job
of one submission across them. Times are stored as ISO-8601 UTC text, metadata as JSON text. The schema
is versioned with ``PRAGMA user_version`` and upgraded by :data:`MIGRATIONS`.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from batch_mcp.domain import Job, Ref, is_terminal
from batch_mcp.store import claims
from batch_mcp.store.claims import CLAIM_LEASE, Claim
from batch_mcp.store.file import StoreFile, StoreVersionError, explain, is_store_failure
from batch_mcp.store.migrations import MIGRATIONS, SCHEMA_VERSION
from batch_mcp.store.records import (
    LEGACY_BACKEND,
    JobGroup,
    JobRecord,
    PreparedFile,
    Submission,
    UploadRecord,
    _job_from_row,
    _metadata_to_text,
    _now,
    _path_to_text,
    _submission_from_row,
    _time_to_text,
    _upload_from_row,
    submission_fingerprint,
)

#: The service keeps file_ids for about 29 days; reusing them for only 7 leaves a wide margin.
DEFAULT_UPLOAD_MAX_AGE = timedelta(days=7)



_SUBMISSION_COLUMNS = (
    "request_id, backend, fingerprint, path, file_id, provider, endpoint, completion_window, metadata, batch_id, "
    "group_id, parent_batch_id, created_at, conflicts"
)
_JOB_QUERY = """
    SELECT b.backend, b.batch_id, b.status, b.total_count, b.completed_count, b.failed_count, b.last_seen,
           b.created_at, b.updated_at, b.output_path, b.error_path, b.table_path, b.usage,
           s.request_id, s.file_id, s.path, s.provider, s.endpoint, s.metadata, s.group_id,
           s.parent_batch_id
    FROM batches AS b LEFT JOIN submissions AS s ON s.backend = b.backend AND s.batch_id = b.batch_id
"""


def _key(ref: str) -> dict[str, str | None]:
    """``backend:native`` names one row; a bare (legacy) id is looked for on every backend."""
    parsed = Ref.parse(ref)
    return {"backend": parsed.backend, "id": parsed.native}


#: Matches a row by ``_key``; of several for one bare id, DigitalOcean's (where bare ids come from) comes first.
_BY_KEY = "(:backend IS NULL OR backend = :backend) AND {column} = :id"
_PREFERRED = f"ORDER BY backend != '{LEGACY_BACKEND}', backend LIMIT 1"


def _older(created_at: str, key: str) -> str:
    """Rows after a page's last one in (created_at DESC, key DESC) order; every row when there is none."""
    return f"(:before_at IS NULL OR {created_at} < :before_at OR ({created_at} = :before_at AND {key} < :before_id))"


def _older_than(before: tuple[datetime, str] | None) -> dict[str, str | None]:
    return {"before_at": _time_to_text(before[0]) if before else None, "before_id": before[1] if before else None}


class JobStore:
    """The server's memory of uploads, submissions and batches.

    :meth:`open` opens it at once and raises :class:`StoreUnavailable` when it cannot; the constructor
    defers that to the first use, so a server can start and explain an unusable store on every call.
    """

    def __init__(self, state_dir: Path, upload_max_age: timedelta = DEFAULT_UPLOAD_MAX_AGE) -> None:
        self._file = StoreFile(state_dir, self._migrate)
        self._lock = threading.Lock()
        self.upload_max_age = upload_max_age

    @classmethod
    def open(cls, state_dir: Path, *, upload_max_age: timedelta = DEFAULT_UPLOAD_MAX_AGE) -> Self:
        """Open (or create) ``state_dir/jobs.sqlite3`` in WAL mode and bring its schema up to date."""
        store = cls(state_dir, upload_max_age)
        store.check()
        return store

    @property
    def path(self) -> Path:
        return self._file.path

    def check(self) -> None:
        """Raise :class:`StoreUnavailable` (path, cause, fix) unless the store can be used now."""
        with self._lock:
            self._file.connection()

    def close(self) -> None:
        with self._lock:
            self._file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @contextmanager
    def _write(self, claim: Claim | None = None) -> Iterator[sqlite3.Connection]:
        """One atomic write; IMMEDIATE takes the write lock up front so read-then-write cannot race.

        With ``claim``, the write happens only while that claim is still held (else :class:`ClaimLost`).
        """
        with self._lock:
            conn = self._file.connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
                if claim is not None:
                    claims.check(conn, claim)
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if is_store_failure(exc):
                    raise explain(self.path, exc) from exc
                raise

    def _query(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self._file.connection().execute(sql, params).fetchall()
            except Exception as exc:
                if is_store_failure(exc):
                    raise explain(self.path, exc) from exc
                raise

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Bring a newly opened file up to date, inside its write lock so two servers never migrate at once."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreVersionError(self.path, version, SCHEMA_VERSION)
            for number, statements in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in statements:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number:d}")  # PRAGMA takes no parameters
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    # Claims

    def claim(self, fingerprint: str, *, lease: timedelta = CLAIM_LEASE, now: datetime | None = None
              ) -> Claim | None:
        """The right to make this submission's job, or None while another live process holds it."""
        with self._write() as conn:
            return claims.take(conn, fingerprint, now or _now(), lease)

    def renew_claim(self, claim: Claim, *, lease: timedelta = CLAIM_LEASE) -> bool:
        """Extend a held claim; False once another process has taken it over."""
        with self._write() as conn:
            return claims.renew(conn, claim, _now(), lease)

    def release_claim(self, claim: Claim) -> None:
        with self._write() as conn:
            claims.release(conn, claim)

    def keeping(self, claim: Claim, *, lease: timedelta = CLAIM_LEASE) -> AbstractContextManager[None]:
        """Renew ``claim`` in the background while the body runs."""
        return claims.renewing(lambda: self.renew_claim(claim, lease=lease), lease)

    # Uploads

    def record_upload(self, upload: UploadRecord) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO uploads (backend, file_id, path, sha256, size_bytes, line_count, intent_expires_at,"
                " created_at, completed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    upload.backend,
                    upload.file_id,
                    str(upload.path),
                    upload.sha256,
                    upload.size_bytes,
                    upload.line_count,
                    _time_to_text(upload.intent_expires_at),
                    _time_to_text(upload.created_at),
                    _time_to_text(upload.completed_at),
                ),
            )

    def mark_upload_complete(self, file_ref: str) -> None:
        """Only a completed upload may be reused: an interrupted one left the file_id empty or partial."""
        upload = self.get_upload(file_ref)
        if upload is None:
            raise KeyError(f"no upload with file_id {file_ref!r}")
        with self._write() as conn:
            conn.execute("UPDATE uploads SET completed_at = ? WHERE backend = ? AND file_id = ?",
                         (_time_to_text(_now()), upload.backend, upload.file_id))

    def get_upload(self, file_ref: str) -> UploadRecord | None:
        """``backend:file_id``, or a bare file_id as stored before there were several backends."""
        rows = self._query(f"SELECT * FROM uploads WHERE {_BY_KEY.format(column='file_id')} {_PREFERRED}",
                           _key(file_ref))
        return _upload_from_row(rows[0]) if rows else None

    def forget_upload(self, file_ref: str) -> None:
        """The API no longer knows this file_id (another account, or expired): never offer it for reuse."""
        with self._write() as conn:
            conn.execute(f"DELETE FROM uploads WHERE {_BY_KEY.format(column='file_id')}", _key(file_ref))

    def find_reusable_upload(self, sha256: str, now: datetime, backend: str = LEGACY_BACKEND
                             ) -> UploadRecord | None:
        """The newest completed upload of the same bytes to ``backend`` whose file_id should still exist there."""
        rows = self._query(
            "SELECT * FROM uploads WHERE backend = ? AND sha256 = ? AND completed_at IS NOT NULL AND created_at > ?"
            " ORDER BY created_at DESC, rowid DESC LIMIT 1",
            (backend, sha256, _time_to_text(now - self.upload_max_age)),
        )
        return _upload_from_row(rows[0]) if rows else None

    # Submissions

    def plan_submission(
        self,
        *,
        sha256: str,
        path: Path | None,
        file_id: str,
        provider: str,
        endpoint: str | None,
        metadata: dict[str, str] | None,
        group_id: str | None = None,
        parent_batch_id: str | None = None,
        claim: Claim | None = None,
        backend: str = LEGACY_BACKEND,
        completion_window: str = "24h",
    ) -> Submission:
        """Store a create call with a fresh request_id; call this before sending it, never after.

        With ``claim``, only while that claim is still held: a holder taken over must not plan a second job.
        """
        submission = Submission(
            request_id=str(uuid.uuid4()),
            backend=backend,
            fingerprint=submission_fingerprint(sha256, provider, endpoint, metadata, backend=backend,
                                               completion_window=completion_window),
            path=path,
            file_id=file_id,
            provider=provider,
            endpoint=endpoint,
            completion_window=completion_window,
            metadata=metadata,
            group_id=group_id,
            parent_batch_id=parent_batch_id,
            created_at=_now(),
        )
        with self._write(claim) as conn:
            conn.execute(
                f"INSERT INTO submissions ({_SUBMISSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    submission.request_id,
                    submission.backend,
                    submission.fingerprint,
                    _path_to_text(submission.path),
                    submission.file_id,
                    submission.provider,
                    submission.endpoint,
                    submission.completion_window,
                    _metadata_to_text(submission.metadata),
                    submission.batch_id,
                    submission.group_id,
                    submission.parent_batch_id,
                    _time_to_text(submission.created_at),
                    submission.conflicts,
                ),
            )
        return submission

    def find_submission_by_fingerprint(self, fingerprint: str) -> Submission | None:
        """The newest submission of the same job (attached or pending), to return instead of a new one."""
        rows = self._query(
            f"SELECT {_SUBMISSION_COLUMNS} FROM submissions WHERE fingerprint = ?"
            " ORDER BY created_at DESC, rowid DESC LIMIT 1",
            (fingerprint,),
        )
        return _submission_from_row(rows[0]) if rows else None

    def attach_batch(self, request_id: str, job: Job) -> None:
        """Record the API's answer to a planned create call; repeating it with the same job is harmless."""
        with self._write() as conn:
            rows = conn.execute(
                "SELECT backend, batch_id FROM submissions WHERE request_id = ?", (request_id,)
            ).fetchall()
            if not rows:
                raise KeyError(f"no submission with request_id {request_id!r}")
            if rows[0]["backend"] != job.backend:
                raise ValueError(f"submission {request_id!r} was planned on {rows[0]['backend']}, not {job.backend}")
            attached = rows[0]["batch_id"]
            if attached is not None and attached != job.id:
                raise ValueError(f"submission {request_id!r} is already attached to {attached!r}, not {job.id!r}")
            conn.execute("UPDATE submissions SET batch_id = ? WHERE request_id = ?", (job.id, request_id))
            self._upsert_batch(conn, job)

    def pending_submissions(self, backend: str | None = None) -> list[Submission]:
        """Create calls whose answer was never stored (oldest first), on one backend or on all of them."""
        rows = self._query(
            f"SELECT {_SUBMISSION_COLUMNS} FROM submissions WHERE batch_id IS NULL"
            " AND (:backend IS NULL OR backend = :backend) ORDER BY created_at, rowid", {"backend": backend}
        )
        return [_submission_from_row(row) for row in rows]

    def count_conflict(self, request_id: str) -> int:
        """Note one more 409 answer to a pending create call; returns how many it has had."""
        with self._write() as conn:
            rows = conn.execute(
                "UPDATE submissions SET conflicts = conflicts + 1 WHERE request_id = ? AND batch_id IS NULL"
                " RETURNING conflicts",
                (request_id,),
            ).fetchall()
        if not rows:
            raise KeyError(f"no pending submission with request_id {request_id!r}")
        return int(rows[0]["conflicts"])

    def discard_submission(self, request_id: str) -> None:
        """Drop a create call the API refused for good, so it is not re-sent after every restart."""
        with self._write() as conn:
            cursor = conn.execute(
                "DELETE FROM submissions WHERE request_id = ? AND batch_id IS NULL", (request_id,)
            )
            if cursor.rowcount == 0:
                raise KeyError(f"no pending submission with request_id {request_id!r}")

    # Jobs

    def upsert_batch(self, job: Job) -> None:
        """Store the latest view of a job (one this server submitted or not)."""
        with self._write() as conn:
            self._upsert_batch(conn, job)

    @staticmethod
    def _upsert_batch(conn: sqlite3.Connection, job: Job) -> None:
        """A stale non-terminal view never overwrites a terminal one: concurrent polls answer out of order."""
        rows = conn.execute("SELECT status FROM batches WHERE backend = ? AND batch_id = ?",
                            (job.backend, job.id)).fetchall()
        if rows and is_terminal(rows[0]["status"]) and not job.is_terminal:
            return
        now = _now()
        counts = job.counts
        conn.execute(
            """INSERT INTO batches (backend, batch_id, status, total_count, completed_count, failed_count,
                                    last_seen, created_at, updated_at)
               VALUES (:backend, :batch_id, :status, :total, :completed, :failed, :last_seen, :created_at, :updated_at)
               ON CONFLICT (backend, batch_id) DO UPDATE SET
                   status = excluded.status, total_count = excluded.total_count,
                   completed_count = excluded.completed_count, failed_count = excluded.failed_count,
                   last_seen = excluded.last_seen, updated_at = excluded.updated_at""",
            {
                "backend": job.backend,
                "batch_id": job.id,
                "status": job.status.value,
                "total": counts.total if counts else 0,
                "completed": counts.succeeded if counts else 0,
                "failed": counts.failed if counts else 0,
                "last_seen": job.model_dump_json(),
                "created_at": _time_to_text(job.created_at or now),
                "updated_at": _time_to_text(now),
            },
        )

    def record_download(self, batch_id: str, output_path: Path | None, error_path: Path | None,
                        table_path: Path | None = None, usage: dict[str, list[int]] | None = None) -> None:
        """Remember where results were written, so a restart neither downloads again nor loses them."""
        record = self.get_job(batch_id)
        if record is None:
            raise KeyError(f"no batch {batch_id!r}")
        with self._write() as conn:
            conn.execute(
                "UPDATE batches SET output_path = ?, error_path = ?, table_path = ?, usage = ?, updated_at = ?"
                " WHERE backend = ? AND batch_id = ?",
                (
                    _path_to_text(output_path),
                    _path_to_text(error_path),
                    _path_to_text(table_path),
                    None if usage is None else json.dumps(usage),
                    _time_to_text(_now()),
                    record.backend,
                    record.batch_id,
                ),
            )

    def get_job(self, job_ref: str) -> JobRecord | None:
        """``backend:batch_id``, or a bare batch_id as stored before there were several backends."""
        rows = self._query(f"{_JOB_QUERY} WHERE (:backend IS NULL OR b.backend = :backend) AND b.batch_id = :id"
                           f" ORDER BY b.backend != '{LEGACY_BACKEND}', b.backend LIMIT 1", _key(job_ref))
        return _job_from_row(rows[0]) if rows else None

    def list_jobs(self, status: str | None = None, limit: int = 100,
                  before: tuple[datetime, str] | None = None) -> list[JobRecord]:
        """Newest first, optionally only those in one status, or older than ``before`` (created_at, batch_id)."""
        rows = self._query(
            f"{_JOB_QUERY} WHERE (:status IS NULL OR b.status = :status) AND {_older('b.created_at', 'b.batch_id')}"
            " ORDER BY b.created_at DESC, b.batch_id DESC LIMIT :limit",
            {"status": status, "limit": limit, **_older_than(before)},
        )
        return [_job_from_row(row) for row in rows]

    # prepared files ------------------------------------------------------------------------------

    def record_prepared(self, path: Path, source_path: Path, source_format: str, id_column: str | None,
                        source_sha256: str) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO prepared_files"
                " (path, source_path, source_format, id_column, source_sha256, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (str(path), str(source_path), source_format, id_column, source_sha256, _time_to_text(_now())),
            )

    def find_prepared(self, path: Path) -> PreparedFile | None:
        rows = self._query("SELECT * FROM prepared_files WHERE path = ?", (str(path),))
        return PreparedFile.model_validate(dict(rows[0])) if rows else None

    # job groups ----------------------------------------------------------------------------------

    def create_group(self, path: Path, sha256: str, fingerprint: str, parts: int,
                     parent_batch_id: str | None = None, claim: Claim | None = None,
                     backend: str = LEGACY_BACKEND) -> JobGroup:
        group = JobGroup(group_id=f"group-{uuid.uuid4()}", backend=backend, path=path, sha256=sha256,
                         fingerprint=fingerprint, parts=parts, parent_batch_id=parent_batch_id, created_at=_now())
        with self._write(claim) as conn:
            conn.execute(
                "INSERT INTO job_groups (group_id, backend, path, sha256, fingerprint, parts, parent_batch_id,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (group.group_id, backend, str(path), sha256, fingerprint, parts, parent_batch_id,
                 _time_to_text(group.created_at)),
            )
        return group

    def get_group(self, group_id: str) -> JobGroup | None:
        rows = self._query("SELECT * FROM job_groups WHERE group_id = ?", (group_id,))
        return JobGroup.model_validate(dict(rows[0])) if rows else None

    def find_group_by_fingerprint(self, fingerprint: str) -> JobGroup | None:
        rows = self._query("SELECT * FROM job_groups WHERE fingerprint = ? ORDER BY created_at DESC LIMIT 1",
                           (fingerprint,))
        return JobGroup.model_validate(dict(rows[0])) if rows else None

    def list_groups(self, limit: int = 100, before: tuple[datetime, str] | None = None) -> list[JobGroup]:
        """Newest first, or older than ``before`` (created_at, group_id)."""
        rows = self._query(f"SELECT * FROM job_groups WHERE {_older('created_at', 'group_id')}"
                           " ORDER BY created_at DESC, group_id DESC LIMIT :limit",
                           {"limit": limit, **_older_than(before)})
        return [JobGroup.model_validate(dict(row)) for row in rows]

    def group_submissions(self, group_id: str) -> list[Submission]:
        """The group's parts in submission order (answered or still pending)."""
        rows = self._query(
            f"SELECT {_SUBMISSION_COLUMNS} FROM submissions WHERE group_id = ? ORDER BY created_at, rowid",
            (group_id,),
        )
        return [_submission_from_row(row) for row in rows]
