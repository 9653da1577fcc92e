"""The SQLite file behind the job store: opened lazily, watched, recreated, and explained when unusable.

The state folder is shared and long-lived, so what happens to it while a server runs matters. A file that
was deleted (the folder removed) is recreated from the copy this process still has open, and a file that
was replaced is switched to, so no job is ever recorded where a later process cannot find it. A file that
cannot be used (not a database, a read-only or missing folder, a full disk, a newer schema) raises
:class:`StoreUnavailable`, whose message names the path, the cause and the fix; the server keeps running and
every tool that needs the store answers with that message.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import uuid
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

log = logging.getLogger(__name__)

STORE_FILENAME = "jobs.sqlite3"
BUSY_TIMEOUT_SECONDS = 5.0
_ELSEWHERE = "or point BATCH_MCP_STATE_DIR (serve --state-dir) at another folder and restart the server"


class StoreUnavailable(RuntimeError):
    """The job store cannot be used. Nothing that needs it runs, so no job is made that could be forgotten."""

    def __init__(self, path: Path | str, cause: str, fix: str) -> None:
        self.path, self.cause, self.fix = path, cause, fix
        super().__init__(f"The job store {path} cannot be used: {cause}. {fix} Until then no job is submitted "
                         "(so none can be forgotten); validating files still works.")


class StoreVersionError(StoreUnavailable):
    """The store was written by a newer release; opening it here could lose what that release knows."""

    def __init__(self, path: Path | str, version: int, understood: int) -> None:
        super().__init__(path, f"it was written by a newer batch-mcp (schema v{version}; this one reads up to "
                               f"v{understood})", f"Upgrade batch-mcp, {_ELSEWHERE}.")


def explain(path: Path, error: Exception) -> StoreUnavailable:
    """The cause and the fix of a failure to open or write the store, in a user's words."""
    name = getattr(error, "sqlite_errorname", "")
    code = error.errno if isinstance(error, OSError) else None
    if name in ("SQLITE_NOTADB", "SQLITE_CORRUPT"):
        return StoreUnavailable(path, "the file is not a batch-mcp job store, or it is damaged",
                                f"Move it aside (the server never overwrites it), {_ELSEWHERE}.")
    if name == "SQLITE_FULL" or code == errno.ENOSPC:
        return StoreUnavailable(path, "the disk is full", f"Free some space and call again, {_ELSEWHERE}.")
    if name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_IOERR", "SQLITE_PERM")) or code is not None:
        detail = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        return StoreUnavailable(path, f"its folder {path.parent} cannot be written ({detail})",
                                f"Make the folder writable and call again, {_ELSEWHERE}.")
    if name == "SQLITE_BUSY":
        return StoreUnavailable(path, f"another process kept it locked for over {BUSY_TIMEOUT_SECONDS:.0f} s",
                                "Call again in a moment.")
    return StoreUnavailable(path, str(error), f"Call again; if it persists, {_ELSEWHERE}.")


#: Failures that mean the file or its folder is unusable (not a bug in a statement).
STORE_FAILURES = (sqlite3.DatabaseError, OSError)
#: Failures that are the statement's fault, whatever the file.
_STATEMENT_FAULTS = (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError)


def is_store_failure(error: BaseException) -> bool:
    return isinstance(error, STORE_FAILURES) and not isinstance(error, _STATEMENT_FAULTS)


def _identity(path: Path) -> tuple[int, int] | None:
    """Which file is at ``path`` now (device and inode), or None when there is none."""
    try:
        found = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return found.st_dev, found.st_ino


class StoreFile:
    """One connection to the file at ``state_dir/jobs.sqlite3``, checked before every use.

    ``prepare`` brings a new connection's schema up to date (inside its own write transaction).
    Callers serialise access (the job store holds a lock around every use).
    """

    def __init__(self, state_dir: Path, prepare: Callable[[sqlite3.Connection], None]) -> None:
        self.path = state_dir.expanduser().absolute() / STORE_FILENAME  # named in full in every explanation
        self._log_path = self.path.with_name(f"{self.path.name}-wal")
        self._prepare = prepare
        self._conn: sqlite3.Connection | None = None
        self._identity: tuple[int, int] | None = None
        self._log_identity: tuple[int, int] | None = None

    def connection(self) -> sqlite3.Connection:
        """A connection to the file at the path now: never to a deleted one, never to one replaced since."""
        try:
            found = _identity(self.path)
            if self._conn is not None and found == self._identity:
                return self._conn
            if self._conn is not None and found is None:
                log.warning("the job store %s was deleted while the server ran; recreating it from the copy "
                            "still open, so no job is forgotten", self.path)
                self._restore(self._conn)
            elif self._conn is not None and self._log_identity is not None and (
                    _identity(self._log_path) == self._log_identity):
                raise StoreUnavailable(
                    self.path, f"another file was put in its place while the server ran, beside the old file's "
                               f"write-ahead log {self._log_path.name}, which SQLite would mix into it",
                    f"Move that file away to keep the store as it was, or restart every batch-mcp server using "
                    f"{self.path.parent} so they all open the new file.")
            elif self._conn is not None:  # e.g. another server recreated a deleted folder first
                log.warning("the job store %s was replaced while the server ran; using the new file", self.path)
            return self._connect()
        except StoreUnavailable:
            raise
        except STORE_FAILURES as exc:
            raise explain(self.path, exc) from None

    def _restore(self, source: sqlite3.Connection) -> None:
        """Write the open copy to the path, unless another process recreated the file first."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}.restoring")
        try:
            with closing(sqlite3.connect(temporary)) as target:
                source.backup(target)
            os.link(temporary, self.path)  # never replaces: a file recreated meanwhile wins, and is used
        except FileExistsError:
            log.warning("another process recreated %s first; using its file", self.path)
        finally:
            temporary.unlink(missing_ok=True)

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_SECONDS,
                                     isolation_level=None,  # transactions are explicit
                                     check_same_thread=False)
        try:
            connection.row_factory = sqlite3.Row
            connection.execute("PRAGMA journal_mode = WAL")
            self._prepare(connection)
            identity, log_identity = _identity(self.path), _identity(self._log_path)
        except BaseException:
            connection.close()
            raise
        self.close()
        self._conn, self._identity, self._log_identity = connection, identity, log_identity
        return connection

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
