"""Durable job store: every upload, planned create call and batch the server has seen.

Users run jobs over days and restart their IDE in between, so the server must never forget a job it
created and never submit one twice. The create call's ``request_id`` (the API's idempotency key) is
stored *before* the call: after a crash between "request sent" and "answer stored", the pending
submission is re-sent with the same ``request_id`` and the API answers with the batch it already made.

The rows live in a :class:`~.database.Database` (SQLite by default, PostgreSQL for a replicated service);
submission claims (:mod:`.claims`) make one job of one submission across processes and replicas, and a
view from :meth:`JobStore.scoped` sees only one tenant's rows (:mod:`.scope`). Times are stored as ISO-8601
UTC text, metadata as JSON text; the schema is upgraded by :data:`MIGRATIONS`.
"""

from __future__ import annotations

import copy
import json
import threading
import uuid
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Self

from batch_mcp.domain import TERMINAL_STATUSES, Job, Ref
from batch_mcp.store.claims import CLAIM_LEASE, Claim
from batch_mcp.store.database import Connection, Database, JobChange, SqliteDatabase
from batch_mcp.store.groups import GroupRecords
from batch_mcp.store.migrations import MIGRATIONS, SCHEMA_VERSION
from batch_mcp.store.records import (
    _SUBMISSION_COLUMNS,
    LEGACY_BACKEND,
    JobRecord,
    Submission,
    UploadRecord,
    _job_from_row,
    _metadata_to_text,
    _now,
    _older,
    _older_than,
    _path_to_text,
    _submission_from_row,
    _time_to_text,
    _upload_from_row,
    submission_fingerprint,
)
from batch_mcp.store.scope import Scope

#: The service keeps file_ids for about 29 days; reusing them for only 7 leaves a wide margin.
DEFAULT_UPLOAD_MAX_AGE = timedelta(days=7)

__all__ = ["DEFAULT_UPLOAD_MAX_AGE", "MIGRATIONS", "SCHEMA_VERSION", "JobStore"]

_JOB_QUERY = """
    SELECT b.backend, b.batch_id, b.status, b.total_count, b.completed_count, b.failed_count, b.last_seen,
           b.created_at, b.updated_at, b.output_path, b.error_path, b.table_path, b.usage,
           s.request_id, s.file_id, s.path, s.provider, s.endpoint, s.metadata, s.group_id,
           s.parent_batch_id
    FROM batches AS b LEFT JOIN submissions AS s
         ON s.account = b.account AND s.backend = b.backend AND s.batch_id = b.batch_id
"""
#: A stale non-terminal view never overwrites a terminal one: concurrent polls answer out of order.
_STILL_OPEN = "batches.status NOT IN ({})".format(", ".join(f"'{status.value}'" for status in TERMINAL_STATUSES))


def _key(ref: str) -> dict[str, str | None]:
    """``backend:native`` names one row; a bare (legacy) id is looked for on every backend."""
    parsed = Ref.parse(ref)
    return {"backend": parsed.backend, "id": parsed.native}


#: Matches a row by ``_key``; of several for one bare id, DigitalOcean's (where bare ids come from) comes first.
_BY_KEY = "(:backend IS NULL OR {alias}backend = :backend) AND {alias}{column} = :id"
_PREFERRED = f"ORDER BY {{alias}}backend != '{LEGACY_BACKEND}', {{alias}}backend LIMIT 1"


class JobStore(GroupRecords):
    """The server's memory of uploads, submissions and batches.

    :meth:`open` opens it at once and raises :class:`StoreUnavailable` when it cannot; the constructor
    defers that to the first use, so a server can start and explain an unusable store on every call.
    ``JobStore(state_dir)`` is SQLite in that folder; ``JobStore(database=...)`` any other database.
    """

    def __init__(self, state_dir: Path | None = None, upload_max_age: timedelta = DEFAULT_UPLOAD_MAX_AGE, *,
                 database: Database | None = None) -> None:
        if database is None:
            if state_dir is None:
                raise TypeError("JobStore needs a state_dir or a database")
            database = SqliteDatabase(state_dir)
        self._db = database
        self._scope = Scope()
        self.upload_max_age = upload_max_age

    @classmethod
    def open(cls, state_dir: Path | None = None, *, upload_max_age: timedelta = DEFAULT_UPLOAD_MAX_AGE,
             database: Database | None = None) -> Self:
        """Open (or create) the store and bring its schema up to date."""
        store = cls(state_dir, upload_max_age, database=database)
        store.check()
        return store

    @classmethod
    def at(cls, state_dir: Path, url: str | None = None, *, upload_max_age: timedelta = DEFAULT_UPLOAD_MAX_AGE,
           claim_lease: timedelta = CLAIM_LEASE) -> Self:
        """SQLite in ``state_dir``, or the PostgreSQL database at ``url`` (``postgresql://…``); opened on first use."""
        if url:
            from batch_mcp.store.postgres import PostgresDatabase  # psycopg is an optional extra: imported if used

            store = cls(upload_max_age=upload_max_age, database=PostgresDatabase(url))
        else:
            store = cls(state_dir, upload_max_age)
        store.claim_lease = claim_lease
        return store

    def scoped(self, accounts: Mapping[str, str]) -> Self:
        """A view on the same database that writes, reads and matches only ``accounts``' rows: backend name
        -> account fingerprint, derived by the caller (see :mod:`.scope`). Closing the store closes its views."""
        view = copy.copy(self)
        view._scope = Scope(accounts)
        return view

    @property
    def database(self) -> Database:
        return self._db

    @property
    def location(self) -> str:
        """Where the rows are, as shown to users (a path, or a URL without its password)."""
        return self._db.location

    def check(self) -> None:
        """Raise :class:`StoreUnavailable` (location, cause, fix) unless the store can be used now."""
        self._db.check()

    def job_changes(self, stop: threading.Event) -> Iterator[JobChange]:
        """Every job change committed by any process on this database (every account's: filter by
        ``change.account``), until ``stop`` is set; PostgreSQL only (NOTIFY), else NotImplementedError."""
        return self._db.changes(stop)

    def status_changes_elsewhere(self, stop: threading.Event) -> Iterator[JobRecord]:
        """Jobs whose status another process (replica) changed, as now stored, in every account: what this
        process's subscribers should hear of, as they hear of its own changes. See :meth:`job_changes`."""
        seen: dict[tuple[str, str, str], str] = {}
        for change in self.job_changes(stop):
            if change.origin == self._db.origin:
                continue  # announced here already
            view = self.scoped({change.backend: change.account})
            record = view.get_job(str(Ref(change.backend, change.batch_id)))
            key = (change.account, change.backend, change.batch_id)
            if record is not None and seen.get(key) != record.status:
                seen[key] = record.status
                yield record

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # Uploads

    def record_upload(self, upload: UploadRecord) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO uploads (account, backend, file_id, path, sha256, size_bytes, line_count,"
                " intent_expires_at, created_at, completed_at) VALUES (:account, :backend, :file_id, :path, :sha256,"
                " :size_bytes, :line_count, :intent_expires_at, :created_at, :completed_at)",
                {
                    "account": self._scope.account(upload.backend),
                    "backend": upload.backend,
                    "file_id": upload.file_id,
                    "path": str(upload.path),
                    "sha256": upload.sha256,
                    "size_bytes": upload.size_bytes,
                    "line_count": upload.line_count,
                    "intent_expires_at": _time_to_text(upload.intent_expires_at),
                    "created_at": _time_to_text(upload.created_at),
                    "completed_at": _time_to_text(upload.completed_at),
                },
            )

    def mark_upload_complete(self, file_ref: str) -> None:
        """Only a completed upload may be reused: an interrupted one left the file_id empty or partial."""
        upload = self.get_upload(file_ref)
        if upload is None:
            raise KeyError(f"no upload with file_id {file_ref!r}")
        with self._write() as conn:
            conn.execute("UPDATE uploads SET completed_at = :now WHERE account = :account AND backend = :backend"
                         " AND file_id = :file_id",
                         {"now": _time_to_text(_now()), "account": self._scope.account(upload.backend),
                          "backend": upload.backend, "file_id": upload.file_id})

    def get_upload(self, file_ref: str) -> UploadRecord | None:
        """``backend:file_id``, or a bare file_id as stored before there were several backends."""
        rows = self._query(f"SELECT * FROM uploads WHERE {self._scope.where()}"
                           f" AND {_BY_KEY.format(alias='', column='file_id')} {_PREFERRED.format(alias='')}",
                           _key(file_ref))
        return _upload_from_row(rows[0]) if rows else None

    def forget_upload(self, file_ref: str) -> None:
        """The API no longer knows this file_id (another account, or expired): never offer it for reuse."""
        with self._write() as conn:
            self._execute(conn, f"DELETE FROM uploads WHERE {self._scope.where()}"
                                f" AND {_BY_KEY.format(alias='', column='file_id')}", _key(file_ref))

    def find_reusable_upload(self, sha256: str, now: datetime, backend: str = LEGACY_BACKEND
                             ) -> UploadRecord | None:
        """The newest completed upload of the same bytes to ``backend`` whose file_id should still exist there."""
        rows = self._query(
            f"SELECT * FROM uploads WHERE {self._scope.where()} AND backend = :backend AND sha256 = :sha256"
            " AND completed_at IS NOT NULL AND created_at > :since ORDER BY created_at DESC, file_id DESC LIMIT 1",
            {"backend": backend, "sha256": sha256, "since": _time_to_text(now - self.upload_max_age)},
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
        row = {**submission.model_dump(include=set(_SUBMISSION_COLUMNS.split(", "))),
               "account": self._scope.account(backend), "path": _path_to_text(submission.path),
               "metadata": _metadata_to_text(submission.metadata), "created_at": _time_to_text(submission.created_at)}
        with self._write(claim) as conn:
            conn.execute(f"INSERT INTO submissions (account, {_SUBMISSION_COLUMNS}) VALUES (:account, "
                         + ", ".join(f":{column}" for column in _SUBMISSION_COLUMNS.split(", ")) + ")", row)
        return submission

    def find_submission_by_fingerprint(self, fingerprint: str) -> Submission | None:
        """The newest submission of the same job (attached or pending), to return instead of a new one."""
        rows = self._query(
            f"SELECT {_SUBMISSION_COLUMNS} FROM submissions WHERE {self._scope.where()} AND fingerprint = :fingerprint"
            " ORDER BY created_at DESC, request_id DESC LIMIT 1",
            {"fingerprint": fingerprint},
        )
        return _submission_from_row(rows[0]) if rows else None

    def attach_batch(self, request_id: str, job: Job) -> None:
        """Record the API's answer to a planned create call; repeating it with the same job is harmless."""
        with self._write() as conn:
            attached = self._execute(
                conn, f"UPDATE submissions SET batch_id = :batch_id WHERE {self._scope.where()}"
                      " AND request_id = :request_id AND backend = :backend"
                      " AND (batch_id IS NULL OR batch_id = :batch_id)",
                {"request_id": request_id, "backend": job.backend, "batch_id": job.id},
            )
            if attached.rowcount != 1:
                rows = self._execute(conn, f"SELECT backend, batch_id FROM submissions WHERE {self._scope.where()}"
                                           " AND request_id = :request_id", {"request_id": request_id}).fetchall()
                if not rows:
                    raise KeyError(f"no submission with request_id {request_id!r}")
                if rows[0]["backend"] != job.backend:
                    raise ValueError(f"submission {request_id!r} was planned on {rows[0]['backend']}, "
                                     f"not {job.backend}")
                raise ValueError(f"submission {request_id!r} is already attached to {rows[0]['batch_id']!r}, "
                                 f"not {job.id!r}")
            self._upsert_batch(conn, job)

    def jobs_of_other_submissions(self, backend: str, request_id: str, since: datetime) -> frozenset[str]:
        """The jobs other submissions on ``backend`` made, planned since ``since``: not this one's to recover."""
        rows = self._query(
            f"SELECT batch_id FROM submissions WHERE {self._scope.where()} AND backend = :backend"
            " AND batch_id IS NOT NULL AND request_id != :request_id AND created_at >= :since",
            {"backend": backend, "request_id": request_id, "since": _time_to_text(since)},
        )
        return frozenset(row["batch_id"] for row in rows)

    def pending_submissions(self, backend: str | None = None) -> list[Submission]:
        """Create calls whose answer was never stored (oldest first), on one backend or on all of them."""
        rows = self._query(
            f"SELECT {_SUBMISSION_COLUMNS} FROM submissions WHERE {self._scope.where()} AND batch_id IS NULL"
            " AND (:backend IS NULL OR backend = :backend) ORDER BY created_at, request_id", {"backend": backend}
        )
        return [_submission_from_row(row) for row in rows]

    def count_conflict(self, request_id: str) -> int:
        """Note one more 409 answer to a pending create call; returns how many it has had."""
        with self._write() as conn:
            rows = self._execute(
                conn, f"UPDATE submissions SET conflicts = conflicts + 1 WHERE {self._scope.where()}"
                      " AND request_id = :request_id AND batch_id IS NULL RETURNING conflicts",
                {"request_id": request_id},
            ).fetchall()
        if not rows:
            raise KeyError(f"no pending submission with request_id {request_id!r}")
        return int(rows[0]["conflicts"])

    def discard_submission(self, request_id: str) -> None:
        """Drop a create call the API refused for good, so it is not re-sent after every restart."""
        with self._write() as conn:
            cursor = self._execute(conn, f"DELETE FROM submissions WHERE {self._scope.where()}"
                                         " AND request_id = :request_id AND batch_id IS NULL",
                                   {"request_id": request_id})
            if cursor.rowcount == 0:
                raise KeyError(f"no pending submission with request_id {request_id!r}")

    # Jobs

    def upsert_batch(self, job: Job) -> None:
        """Store the latest view of a job (one this server submitted or not)."""
        with self._write() as conn:
            self._upsert_batch(conn, job)

    def _upsert_batch(self, conn: Connection, job: Job) -> None:
        """One statement, so two replicas polling at once cannot interleave a read and a write."""
        now = _now()
        counts = job.counts
        account = self._scope.account(job.backend)
        conn.execute(
            f"""INSERT INTO batches (account, backend, batch_id, status, total_count, completed_count, failed_count,
                                     last_seen, created_at, updated_at)
               VALUES (:account, :backend, :batch_id, :status, :total, :completed, :failed, :last_seen, :created_at,
                       :updated_at)
               ON CONFLICT (account, backend, batch_id) DO UPDATE SET
                   status = excluded.status, total_count = excluded.total_count,
                   completed_count = excluded.completed_count, failed_count = excluded.failed_count,
                   last_seen = excluded.last_seen, updated_at = excluded.updated_at
               WHERE :terminal = 1 OR {_STILL_OPEN}""",
            {
                "account": account,
                "backend": job.backend,
                "batch_id": job.id,
                "status": job.status.value,
                "total": counts.total if counts else 0,
                "completed": counts.succeeded if counts else 0,
                "failed": counts.failed if counts else 0,
                "last_seen": job.model_dump_json(),
                "created_at": _time_to_text(job.created_at or now),
                "updated_at": _time_to_text(now),
                "terminal": int(job.is_terminal),
            },
        )
        self._db.announce(conn, account, job.backend, job.id)

    def record_download(self, batch_id: str, output_path: Path | None, error_path: Path | None,
                        table_path: Path | None = None, usage: dict[str, list[int]] | None = None) -> None:
        """Remember where results were written, so a restart neither downloads again nor loses them."""
        record = self.get_job(batch_id)
        if record is None:
            raise KeyError(f"no batch {batch_id!r}")
        with self._write() as conn:
            conn.execute(
                "UPDATE batches SET output_path = :output_path, error_path = :error_path, table_path = :table_path,"
                " usage = :usage, updated_at = :now WHERE account = :account AND backend = :backend"
                " AND batch_id = :batch_id",
                {
                    "output_path": _path_to_text(output_path),
                    "error_path": _path_to_text(error_path),
                    "table_path": _path_to_text(table_path),
                    "usage": None if usage is None else json.dumps(usage),
                    "now": _time_to_text(_now()),
                    "account": self._scope.account(record.backend),
                    "backend": record.backend,
                    "batch_id": record.batch_id,
                },
            )

    def get_job(self, job_ref: str) -> JobRecord | None:
        """``backend:batch_id``, or a bare batch_id as stored before there were several backends."""
        rows = self._query(f"{_JOB_QUERY} WHERE {self._scope.where('b.')}"
                           f" AND {_BY_KEY.format(alias='b.', column='batch_id')} {_PREFERRED.format(alias='b.')}",
                           _key(job_ref))
        return _job_from_row(rows[0]) if rows else None

    def list_jobs(self, status: str | None = None, limit: int = 100,
                  before: tuple[datetime, str] | None = None) -> list[JobRecord]:
        """Newest first, optionally only those in one status, or older than ``before`` (created_at, batch_id)."""
        rows = self._query(
            f"{_JOB_QUERY} WHERE {self._scope.where('b.')} AND (:status IS NULL OR b.status = :status)"
            f" AND {_older('b.created_at', 'b.batch_id')} ORDER BY b.created_at DESC, b.batch_id DESC LIMIT :limit",
            {"status": status, "limit": limit, **_older_than(before)},
        )
        return [_job_from_row(row) for row in rows]
