"""The database under the job store: one interface, SQLite here and PostgreSQL in :mod:`.postgres`.

Statements are written once, in the dialect both understand (named ``:name`` parameters, ``ON CONFLICT``
upserts, ``RETURNING``); a backend translates what it must. A write is one atomic transaction; a backend
that can race (PostgreSQL, several replicas) gets its atomicity from single conditional statements and row
locks taken by the store's own statements, never from a process-local lock.
"""

from __future__ import annotations

import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from batch_mcp.store.file import StoreFile, StoreVersionError, explain, is_store_failure
from batch_mcp.store.migrations import MIGRATIONS, SCHEMA_VERSION

Params = Mapping[str, Any]


class Cursor(Protocol):
    rowcount: int

    def fetchall(self) -> list[Any]: ...

    def fetchone(self) -> Any: ...


class Connection(Protocol):
    def execute(self, sql: str, params: Params = ...) -> Cursor: ...


@dataclass(frozen=True)
class JobChange:
    """One job's row changed, announced by whichever process (replica) changed it: ``origin`` is that
    database object's :attr:`Database.origin`, so a replica can skip what it announced itself."""

    account: str
    backend: str
    batch_id: str
    origin: str


class Database(ABC):
    """Where the store's rows live; every method raises :class:`StoreUnavailable` when it cannot be used."""

    #: ``sqlite`` or ``postgresql``: the few places semantics differ ask this.
    dialect: str
    #: The store's location as shown to users (a path, or a URL without its password).
    location: str
    #: Whether a claim's holder can be checked by pid (one machine): else only its lease counts.
    local_processes: bool
    #: Tells this object's announcements from other processes' (see :class:`JobChange`).
    origin: str = ""

    @abstractmethod
    def transaction(self) -> AbstractContextManager[Connection]:
        """One atomic write, committed when the body returns and rolled back when it raises."""

    @abstractmethod
    def query(self, sql: str, params: Params = {}) -> list[Any]:  # noqa: B006 - never mutated
        """Rows of one read, each readable as ``row["column"]`` and ``dict(row)``."""

    @abstractmethod
    def version(self) -> int:
        """The schema version of the store as it is now (after opening it, :data:`SCHEMA_VERSION`)."""

    @abstractmethod
    def stored_version(self) -> int:
        """The schema version as stored, without creating or migrating anything (0: no store yet)."""

    @abstractmethod
    def close(self) -> None: ...

    def check(self) -> None:
        """Open (and migrate) now, raising :class:`StoreUnavailable` (location, cause, fix) when it cannot."""
        self.version()

    def announce(self, conn: Connection, account: str, backend: str, batch_id: str) -> None:
        """Tell other processes, once this transaction commits, that a job changed (where they can listen)."""
        return None  # SQLite: one process tells its own subscribers

    def changes(self, stop: threading.Event) -> Iterator[JobChange]:
        """Job changes made by every process on this database, until ``stop`` is set."""
        raise NotImplementedError(f"{self.dialect} does not announce changes across processes: a single server "
                                  "tells its own subscribers; run replicas on PostgreSQL")


class SqliteDatabase(Database):
    """``state_dir/jobs.sqlite3``: one connection shared by the event loop and worker threads.

    A lock serialises statements within the process; ``BEGIN IMMEDIATE`` plus a busy timeout serialise
    writers across processes (two IDE windows may run two servers on one state folder). The schema is
    versioned with ``PRAGMA user_version``.
    """

    dialect = "sqlite"
    local_processes = True

    def __init__(self, state_dir: Path) -> None:
        self._file = StoreFile(state_dir, self._migrate)
        self._lock = threading.Lock()
        self.location = str(self._file.path)

    @property
    def path(self) -> Path:
        return self._file.path

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """IMMEDIATE takes the write lock up front, so a read-then-write in the body cannot race."""
        with self._lock:
            conn = self._file.connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if is_store_failure(exc):
                    raise explain(self.path, exc) from exc
                raise

    def query(self, sql: str, params: Params = {}) -> list[sqlite3.Row]:  # noqa: B006
        with self._lock:
            try:
                return self._file.connection().execute(sql, params).fetchall()
            except Exception as exc:
                if is_store_failure(exc):
                    raise explain(self.path, exc) from exc
                raise

    def version(self) -> int:
        return int(self.query("PRAGMA user_version")[0][0])

    def stored_version(self) -> int:
        if not self.path.exists():
            return 0
        try:
            with closing(sqlite3.connect(f"{self.path.as_uri()}?mode=ro", uri=True)) as conn:
                return int(conn.execute("PRAGMA user_version").fetchone()[0])
        except sqlite3.Error as exc:
            raise explain(self.path, exc) from exc

    def close(self) -> None:
        with self._lock:
            self._file.close()

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
