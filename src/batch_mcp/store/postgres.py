"""The job store on PostgreSQL, for a service of several replicas (``BATCH_MCP_STORE_URL=postgresql://…``).

psycopg 3 with its connection pool, used synchronously: the store's API is synchronous and called from the
event loop and worker threads, like SQLite's; a statement on a nearby server takes well under a millisecond,
and an async store would change every caller in the services for no gain in what they can do. Statements
are the store's own (see :mod:`.database`), with ``:name`` parameters spelled ``%(name)s`` here and bound on
the client side, so ``:x IS NULL`` needs no type. The schema is versioned in a ``schema_version`` table
and migrated under an advisory lock, so replicas starting together migrate once. Job changes are announced
with ``NOTIFY`` in the transaction that makes them, so every replica can tell its subscribers.
"""

from __future__ import annotations

import functools
import json
import re
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

try:
    import psycopg
    from psycopg_pool import ConnectionPool
except ImportError:  # the postgres extra is not installed: PostgresDatabase says so when it is made
    psycopg = None  # type: ignore[assignment]

from batch_mcp.store.database import Database, JobChange, Params
from batch_mcp.store.file import StoreUnavailable, StoreVersionError
from batch_mcp.store.migrations import MIGRATIONS, SCHEMA_VERSION

_FIX = "Check BATCH_MCP_STORE_URL and that the PostgreSQL server is up and reachable, then call again."
_PARAMETER = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")
#: How long a call waits for a connection (a new one, or a free one of the pool) before the store is unavailable.
CONNECT_TIMEOUT_S = 10
POOL_TIMEOUT_S = 10.0


def redacted(url: str) -> str:
    """The URL without its password, to show users and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


@functools.lru_cache(maxsize=512)  # the store has a few dozen statements, each sent many times
def translate(sql: str) -> str:
    """The store's ``:name`` parameters as psycopg's ``%(name)s`` (and a literal ``%`` doubled)."""
    return _PARAMETER.sub(r"%(\1)s", sql.replace("%", "%%"))


class Row(dict[str, Any]):
    """A row readable by column name and by position, as SQLite's rows are."""

    def __getitem__(self, key: str | int) -> Any:  # type: ignore[override]
        return list(self.values())[key] if isinstance(key, int) else super().__getitem__(key)


def _rows(cursor: psycopg.Cursor[Any]) -> Callable[[Sequence[Any]], Row]:
    names = [column.name for column in cursor.description or ()]
    return lambda values: Row(zip(names, values, strict=True))


class _Connection:
    """One pooled connection in a transaction, speaking the store's dialect."""

    def __init__(self, conn: psycopg.Connection[Row]) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Params = {}) -> psycopg.Cursor[Row]:  # noqa: B006 - never mutated
        return self._conn.execute(translate(sql), dict(params))


class PostgresDatabase(Database):
    """The rows in a PostgreSQL database (the URL's ``options=-csearch_path=…`` picks a schema)."""

    dialect = "postgresql"
    local_processes = False

    def __init__(self, url: str, *, max_connections: int = 10) -> None:
        self._url = url
        self.location = redacted(url)
        if psycopg is None:
            raise StoreUnavailable(self.location, "its driver (psycopg) is not installed",
                                   "Install it: pip install 'batch-mcp[postgres]'.")
        self._max = max_connections
        self._pool: ConnectionPool[psycopg.Connection[Row]] | None = None
        self._opening = threading.Lock()  # one pool per process; replicas coordinate in the database
        self.channel = ""
        self.origin = uuid.uuid4().hex

    def _unavailable(self, error: Exception) -> StoreUnavailable:
        cause = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return StoreUnavailable(self.location, f"the database cannot be reached or refused us ({cause})", _FIX)

    def _ready(self) -> ConnectionPool[psycopg.Connection[Row]]:
        """The pool, the schema migrated first, on first use (so a server starts, and explains a database
        that is down on every call instead of failing to start)."""
        with self._opening:
            if self._pool is None:
                with psycopg.connect(self._url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
                                     cursor_factory=psycopg.ClientCursor, row_factory=_rows) as conn:
                    self._migrate(conn)
                self._pool = ConnectionPool(
                    self._url, min_size=1, max_size=self._max, timeout=POOL_TIMEOUT_S,
                    check=ConnectionPool.check_connection,  # a connection the server dropped is replaced
                    kwargs={"autocommit": True, "cursor_factory": psycopg.ClientCursor, "row_factory": _rows,
                            "connect_timeout": CONNECT_TIMEOUT_S})
            return self._pool

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Row]]:
        try:
            with self._ready().connection() as conn:
                yield conn
        except StoreUnavailable:
            raise
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise self._unavailable(exc) from exc

    @contextmanager
    def transaction(self) -> Iterator[_Connection]:
        with self._connection() as conn, conn.transaction():
            yield _Connection(conn)

    def query(self, sql: str, params: Params = {}) -> list[Row]:  # noqa: B006
        with self._connection() as conn:
            return _Connection(conn).execute(sql, params).fetchall()

    def version(self) -> int:
        rows = self.query("SELECT version FROM schema_version")
        return int(rows[0]["version"]) if rows else 0

    def stored_version(self) -> int:
        try:
            with psycopg.connect(self._url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as conn:
                if conn.execute("SELECT to_regclass('schema_version')").fetchone() == (None,):
                    return 0
                row = conn.execute("SELECT version FROM schema_version").fetchone()
                return int(row[0]) if row else 0
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise self._unavailable(exc) from exc

    def close(self) -> None:
        with self._opening:
            if self._pool is not None:
                self._pool.close()
                self._pool = None

    def _migrate(self, conn: psycopg.Connection[Row]) -> None:
        """Every migration not yet applied, in one transaction under a lock every replica takes."""
        with conn.transaction():
            schema = conn.execute("SELECT current_schema() AS name").fetchone()
            self.channel = f"batch_mcp_jobs.{schema['name'] if schema else 'public'}"
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('batch-mcp schema ' || current_schema()))")
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = conn.execute("SELECT version FROM schema_version").fetchone()
            version = int(row["version"]) if row else 0
            if row is None:
                conn.execute("INSERT INTO schema_version (version) VALUES (0)")
            if version > SCHEMA_VERSION:
                raise StoreVersionError(self.location, version, SCHEMA_VERSION)
            for number, statements in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in statements:
                    conn.execute(translate(statement))
                conn.execute("UPDATE schema_version SET version = %s", (number,))

    # change notifications across replicas

    def announce(self, conn: _Connection, account: str, backend: str, batch_id: str) -> None:
        """Tell every replica's listener, once this transaction commits, that this job changed."""
        conn.execute("SELECT pg_notify(:channel, :payload)", {"channel": self.channel, "payload": json.dumps(
            {"account": account, "backend": backend, "batch_id": batch_id, "origin": self.origin})})

    def changes(self, stop: threading.Event) -> Iterator[JobChange]:
        """Job changes made by any replica, as they commit, on a connection of their own (not the pool's),
        until ``stop`` is set (seen within half a second)."""
        try:
            self._ready()
            with psycopg.connect(self._url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as conn:
                conn.execute(f'LISTEN "{self.channel}"')
                while not stop.is_set():
                    for notice in conn.notifies(timeout=0.5):
                        yield JobChange(**json.loads(notice.payload))
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise self._unavailable(exc) from exc
