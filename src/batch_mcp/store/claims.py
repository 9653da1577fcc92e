"""Submission claims: which process may make a job, so two servers on one state folder make it once.

The in-process lock only orders tasks of one server, and every server a user runs shares the default state
folder. So before uploading, a server takes a row in ``claims`` keyed by the submission's fingerprint; a
second server finds it taken and waits, then returns the job the holder made. A claim is a lease: its
holder renews it while it uploads and creates, and it is taken over once it expires, or (on SQLite, one
machine) at once when its holder's process is gone from this machine (killed, crashed). A job is only
planned under a claim still held at that moment (checked in the planning transaction), so a holder whose
lease was taken over cannot make a second job. Claims are per account: the same submission in two tenants'
accounts is two jobs, each made once.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from batch_mcp.store.scope import LOCAL_ACCOUNT

if TYPE_CHECKING:
    from batch_mcp.store.database import Connection

#: How long a claim lasts without renewal (its holder renews it every third of that).
CLAIM_LEASE = timedelta(seconds=30)


class ClaimLost(RuntimeError):
    """Another process took over this submission (our lease ran out); it makes the job, not us."""


@dataclass(frozen=True)
class Claim:
    fingerprint: str
    holder: str
    account: str = LOCAL_ACCOUNT


def _alive(pid: int) -> bool:
    """Whether a process on this machine still runs (an exited child not yet reaped counts as gone)."""
    if sys.platform == "win32":  # os.kill would terminate it there; rely on the lease alone
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def take(conn: Connection, account: str, fingerprint: str, now: datetime, lease: timedelta, *,
         local_processes: bool) -> Claim | None:
    """Claim ``fingerprint`` in ``account`` unless a live holder has it; call inside a write transaction.

    The take is one compare-and-swap on the row (an insert, or an update of the very holder seen expired),
    so two takers racing on a database without a global write lock (PostgreSQL) cannot both win. With
    ``local_processes`` (one machine, SQLite) a holder whose process is gone is taken over at once; across
    machines only the lease's expiry counts.
    """
    row = conn.execute("SELECT holder, host, pid, expires_at FROM claims WHERE account = :account"
                       " AND fingerprint = :fingerprint", {"account": account, "fingerprint": fingerprint}).fetchone()
    if row is not None and datetime.fromisoformat(row["expires_at"]) > now and not (
            local_processes and row["host"] == socket.gethostname() and not _alive(row["pid"])):
        return None
    claim = Claim(fingerprint, uuid.uuid4().hex, account)
    taken = conn.execute(
        "INSERT INTO claims (account, fingerprint, holder, host, pid, expires_at)"
        " VALUES (:account, :fingerprint, :holder, :host, :pid, :expires_at)"
        " ON CONFLICT (account, fingerprint) DO UPDATE SET holder = excluded.holder, host = excluded.host,"
        " pid = excluded.pid, expires_at = excluded.expires_at WHERE claims.holder = :seen RETURNING holder",
        {"account": account, "fingerprint": fingerprint, "holder": claim.holder, "host": socket.gethostname(),
         "pid": os.getpid(), "expires_at": (now + lease).isoformat(), "seen": row["holder"] if row else None},
    ).fetchall()
    return claim if taken else None


def check(conn: Connection, claim: Claim) -> None:
    """Refuse to go on unless the claim is still ours (call inside the transaction that depends on it).

    An update, not a read: it locks the claim's row until the transaction ends, so no taker can slip in
    between this check and the write that depends on it.
    """
    held = conn.execute("UPDATE claims SET holder = holder WHERE account = :account AND fingerprint = :fingerprint"
                        " AND holder = :holder", _key(claim))
    if held.rowcount != 1:
        raise ClaimLost("Another batch-mcp process took over this submission while this one was slow; nothing "
                        "was submitted here. Call the same tool again to get the job that process makes.")


def renew(conn: Connection, claim: Claim, now: datetime, lease: timedelta) -> bool:
    cursor = conn.execute("UPDATE claims SET expires_at = :expires_at WHERE account = :account"
                          " AND fingerprint = :fingerprint AND holder = :holder",
                          {**_key(claim), "expires_at": (now + lease).isoformat()})
    return cursor.rowcount == 1


def release(conn: Connection, claim: Claim) -> None:
    conn.execute("DELETE FROM claims WHERE account = :account AND fingerprint = :fingerprint AND holder = :holder",
                 _key(claim))


def _key(claim: Claim) -> dict[str, str]:
    return {"account": claim.account, "fingerprint": claim.fingerprint, "holder": claim.holder}


@contextmanager
def renewing(renew_once: Callable[[], object], lease: timedelta) -> Iterator[None]:
    """Renew a lease from a thread while the body runs, so a long upload never lets it lapse.

    A thread rather than a task: it keeps renewing even while the event loop is busy, and exceptions of
    the body pass through unchanged.
    """
    done = threading.Event()

    def loop() -> None:
        while not done.wait(lease.total_seconds() / 3):
            try:
                renew_once()
            except Exception:  # a busy or missing store: the planning transaction checks the claim anyway
                continue

    thread = threading.Thread(target=loop, name="batch-mcp-claim", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
