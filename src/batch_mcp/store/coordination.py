"""What replicas and tenants coordinate through the store: submission claims, leases and one-time links.

Each is one conditional statement (an upsert or update guarded by who holds it and when it expires), so
it is atomic on every database without a process-local lock. Times are the caller's clock: replicas of one
service need synchronised clocks (NTP), far tighter than any lease or link lifetime.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime, timedelta
from typing import Any

from pydantic import AwareDatetime, BaseModel

from batch_mcp.store import claims
from batch_mcp.store.claims import CLAIM_LEASE, Claim
from batch_mcp.store.database import Connection, Database, Params
from batch_mcp.store.records import LEGACY_BACKEND, _now, _time_to_text
from batch_mcp.store.scope import Scope


class Link(BaseModel):
    """A one-time link as it was made: whose it is, what it is for, and what it carries."""

    account: str
    kind: str
    payload: dict[str, Any]
    expires_at: AwareDatetime


def _token_hash(token: str) -> str:
    """Only a hash of a link's token is stored: reading the store does not give working links."""
    return hashlib.sha256(token.encode()).hexdigest()


class Coordinated:
    """The store's database and the caller's scope, and what they coordinate (see the module's text)."""

    _db: Database
    _scope: Scope
    #: How long a claim lasts unrenewed: a crashed holder's is taken over after that (at once, on SQLite).
    claim_lease: timedelta = CLAIM_LEASE

    @contextmanager
    def _write(self, claim: Claim | None = None) -> Iterator[Connection]:
        """One atomic write; with ``claim``, only while that claim is still held (else :class:`ClaimLost`)."""
        with self._db.transaction() as conn:
            if claim is not None:
                claims.check(conn, claim)
            yield conn

    def _query(self, sql: str, params: Params = {}) -> list[Any]:  # noqa: B006 - never mutated
        """A read; the scope's parameters are always at hand for its ``where`` conditions."""
        return self._db.query(sql, {**self._scope.params, **params})

    def _execute(self, conn: Connection, sql: str, params: Params) -> Any:
        return conn.execute(sql, {**self._scope.params, **params})

    # Claims

    def claim(self, fingerprint: str, *, backend: str = LEGACY_BACKEND, lease: timedelta | None = None,
              now: datetime | None = None) -> Claim | None:
        """The right to make this submission's job (in this view's account on ``backend``), or None while
        another live process holds it."""
        account = self._scope.account(backend)
        with self._write() as conn:
            return claims.take(conn, account, fingerprint, now or _now(), lease or self.claim_lease,
                               local_processes=self._db.local_processes)

    def renew_claim(self, claim: Claim, *, lease: timedelta | None = None) -> bool:
        """Extend a held claim; False once another process has taken it over."""
        with self._write() as conn:
            return claims.renew(conn, claim, _now(), lease or self.claim_lease)

    def release_claim(self, claim: Claim) -> None:
        with self._write() as conn:
            claims.release(conn, claim)

    def keeping(self, claim: Claim, *, lease: timedelta | None = None) -> AbstractContextManager[None]:
        """Renew ``claim`` in the background while the body runs."""
        lease = lease or self.claim_lease
        return claims.renewing(lambda: self.renew_claim(claim, lease=lease), lease)

    # Leases: work one replica of a service does at a time (resuming submissions, polling watched jobs)

    def take_lease(self, name: str, holder: str, ttl: timedelta, *, now: datetime | None = None) -> bool:
        """Hold ``name`` for ``ttl`` unless another holder has it unexpired; True when ``holder`` has it now
        (taking it again extends it, like :meth:`renew_lease`)."""
        now = now or _now()
        with self._write() as conn:
            rows = conn.execute(
                "INSERT INTO leases (name, holder, expires_at) VALUES (:name, :holder, :expires_at)"
                " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at"
                " WHERE leases.holder = excluded.holder OR leases.expires_at <= :now RETURNING holder",
                {"name": name, "holder": holder, "expires_at": _time_to_text(now + ttl), "now": _time_to_text(now)},
            ).fetchall()
        return bool(rows)

    def renew_lease(self, name: str, holder: str, ttl: timedelta, *, now: datetime | None = None) -> bool:
        """Extend a lease still held; False once it lapsed and another holder took it (or nobody holds it)."""
        now = now or _now()
        with self._write() as conn:
            cursor = conn.execute("UPDATE leases SET expires_at = :expires_at WHERE name = :name AND holder = :holder",
                                  {"name": name, "holder": holder, "expires_at": _time_to_text(now + ttl)})
            return cursor.rowcount == 1

    def release_lease(self, name: str, holder: str) -> None:
        """Give the lease up at once (a clean shutdown), so another replica need not wait for it to expire."""
        with self._write() as conn:
            conn.execute("DELETE FROM leases WHERE name = :name AND holder = :holder", {"name": name, "holder": holder})

    # One-time links

    def create_link(self, kind: str, payload: dict[str, Any], ttl: timedelta, *, account: str | None = None,
                    now: datetime | None = None) -> str:
        """A fresh unguessable token for one use within ``ttl``, for ``account`` (default: this view's owner,
        see :mod:`.scope`). The token is returned once; the store keeps only its hash."""
        token = secrets.token_urlsafe(32)
        now = now or _now()
        with self._write() as conn:
            conn.execute(
                "INSERT INTO links (token_hash, account, kind, payload, created_at, expires_at)"
                " VALUES (:token_hash, :account, :kind, :payload, :created_at, :expires_at)",
                {"token_hash": _token_hash(token), "account": self._scope.owner if account is None else account,
                 "kind": kind, "payload": json.dumps(payload), "created_at": _time_to_text(now),
                 "expires_at": _time_to_text(now + ttl)},
            )
        return token

    def consume_link(self, token: str, kind: str, *, account: str | None = None, now: datetime | None = None
                     ) -> Link | None:
        """Use a link, exactly once: its record the first time, None when it is unknown, used, expired, of
        another kind or (with ``account``) another account's. Two concurrent uses: one wins."""
        now = now or _now()
        with self._write() as conn:
            rows = conn.execute(
                "UPDATE links SET used_at = :now WHERE token_hash = :token_hash AND kind = :kind"
                " AND used_at IS NULL AND expires_at > :now AND (:account IS NULL OR account = :account)"
                " RETURNING account, kind, payload, expires_at",
                {"token_hash": _token_hash(token), "kind": kind, "account": account, "now": _time_to_text(now)},
            ).fetchall()
        if not rows:
            return None
        row = rows[0]
        return Link(account=row["account"], kind=row["kind"], payload=json.loads(row["payload"]),
                    expires_at=row["expires_at"])

    def purge_links(self, *, now: datetime | None = None) -> int:
        """Forget links that expired or were used; returns how many."""
        with self._write() as conn:
            return conn.execute("DELETE FROM links WHERE used_at IS NOT NULL OR expires_at <= :now",
                                {"now": _time_to_text(now or _now())}).rowcount
