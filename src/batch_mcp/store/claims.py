"""Submission claims: which process may make a job, so two servers on one state folder make it once.

The in-process lock only orders tasks of one server, and every server a user runs shares the default state
folder. So before uploading, a server takes a row in ``claims`` keyed by the submission's fingerprint; a
second server finds it taken and waits, then returns the job the holder made. A claim is a lease: its
holder renews it while it uploads and creates, and it is taken over once it expires, or at once when its
holder's process is gone from this machine (killed, crashed). A job is only planned under a claim still
held at that moment (checked in the planning transaction), so a holder whose lease was taken over cannot
make a second job.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

#: How long a claim lasts without renewal (its holder renews it every third of that).
CLAIM_LEASE = timedelta(seconds=30)


class ClaimLost(RuntimeError):
    """Another process took over this submission (our lease ran out); it makes the job, not us."""


@dataclass(frozen=True)
class Claim:
    fingerprint: str
    holder: str


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


def take(conn: sqlite3.Connection, fingerprint: str, now: datetime, lease: timedelta) -> Claim | None:
    """Claim ``fingerprint`` unless a live holder has it; call inside a write transaction."""
    row = conn.execute("SELECT host, pid, expires_at FROM claims WHERE fingerprint = ?", (fingerprint,)).fetchone()
    if row is not None and datetime.fromisoformat(row["expires_at"]) > now and (
            row["host"] != socket.gethostname() or _alive(row["pid"])):
        return None
    claim = Claim(fingerprint, uuid.uuid4().hex)
    conn.execute("INSERT OR REPLACE INTO claims (fingerprint, holder, host, pid, expires_at) VALUES (?, ?, ?, ?, ?)",
                 (fingerprint, claim.holder, socket.gethostname(), os.getpid(), (now + lease).isoformat()))
    return claim


def check(conn: sqlite3.Connection, claim: Claim) -> None:
    """Refuse to go on unless the claim is still ours (call inside the transaction that depends on it)."""
    row = conn.execute("SELECT 1 FROM claims WHERE fingerprint = ? AND holder = ?",
                       (claim.fingerprint, claim.holder)).fetchone()
    if row is None:
        raise ClaimLost("Another batch-mcp process took over this submission while this one was slow; nothing "
                        "was submitted here. Call the same tool again to get the job that process makes.")


def renew(conn: sqlite3.Connection, claim: Claim, now: datetime, lease: timedelta) -> bool:
    cursor = conn.execute("UPDATE claims SET expires_at = ? WHERE fingerprint = ? AND holder = ?",
                          ((now + lease).isoformat(), claim.fingerprint, claim.holder))
    return cursor.rowcount == 1


def release(conn: sqlite3.Connection, claim: Claim) -> None:
    conn.execute("DELETE FROM claims WHERE fingerprint = ? AND holder = ?", (claim.fingerprint, claim.holder))


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
