"""Hosted mode's tenants and links: account fingerprints, each account's folders, and signed, expiring links.

A tenant is whoever holds a provider key: its account on a backend is ``HMAC-SHA256(server secret,
"<backend>:<key>")`` in hex, so the key itself is never stored, and nobody without the server secret can
compute an account from a key. Every file of an account lives under its own folder of the state folder.

A link is a credential in a URL, like a presigned storage URL. An upload link is a one-time link of the job
store (its token's hash, account, upload id and expiry in the database, consumed exactly once by whichever
replica takes the PUT). A download link may be fetched again until it expires, so it is signed instead: a
base64url JSON payload (whose file, until when) and its HMAC under a key derived from the server secret, which
any replica checks without asking anyone.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

#: What an upload id looks like (also the file's name in the account's uploads folder, plus ``.jsonl``).
UPLOAD_ID = re.compile(r"^upload-[0-9a-f]{32}$")
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")


def account_of(secret: bytes, backend: str, key: str) -> str:
    """The account fingerprint of ``key`` on ``backend``: 64 hex characters, the same on every replica."""
    return hmac.new(secret, f"{backend}:{key}".encode(), hashlib.sha256).hexdigest()


def new_upload_id() -> str:
    return f"upload-{secrets.token_hex(16)}"


class LinkRefused(Exception):
    """A link or upload that is forged, damaged, expired, used already, or not the caller's; ``status`` is the
    HTTP answer."""

    def __init__(self, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Download:
    """What a download link grants: the file ``name`` (its path in the results folder) of ``account`` on
    ``backend``, until ``expires_at`` (Unix seconds)."""

    backend: str
    account: str
    name: str
    expires_at: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Links:
    """Signs and checks download links, and knows where each account's uploads and results live."""

    def __init__(self, secret: bytes, root: Path, ttl_s: float) -> None:
        self._key = hmac.new(secret, b"batch-mcp links v1", hashlib.sha256).digest()  # never the accounts' key
        self.root = root
        self.ttl_s = ttl_s

    def sign(self, backend: str, account: str, name: str, *, now: float | None = None) -> str:
        """A download token for the file ``name`` of ``account``'s results, valid for ``ttl_s``."""
        expires_at = int((time.time() if now is None else now) + self.ttl_s)
        payload = _b64(json.dumps([backend, account, name, expires_at], separators=(",", ":")).encode())
        return f"{payload}.{self._mac(payload)}"

    def check(self, token: str, *, now: float | None = None) -> Download:
        """What the download token grants, or :class:`LinkRefused`; never says more of a bad token than that."""
        payload, _, mac = token.partition(".")
        if not (payload and mac and hmac.compare_digest(mac, self._mac(payload))):
            raise LinkRefused("This link is not valid (damaged, or not made by this service): call "
                              "download_batch_results for fresh links.")
        try:
            backend, account, name, expires_at = json.loads(_unb64(payload))
        except (ValueError, TypeError, binascii.Error):
            raise LinkRefused("This link is not valid: call download_batch_results for fresh links.") from None
        if (time.time() if now is None else now) >= expires_at:
            raise LinkRefused("This link has expired: call download_batch_results for fresh links.", status=410)
        return Download(backend, account, name, int(expires_at))

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())

    def account_folder(self, account: str) -> Path:
        if not re.fullmatch(r"[0-9a-f]{64}", account):
            raise LinkRefused("This link is not valid: ask for a new one.")
        return self.root / account

    def uploads(self, account: str) -> Path:
        return self.account_folder(account) / "uploads"

    def results(self, account: str) -> Path:
        return self.account_folder(account) / "results"

    def upload_path(self, account: str, upload_id: str) -> Path:
        if not UPLOAD_ID.match(upload_id):
            raise LinkRefused(f"{upload_id[:80]!r} is not an upload id (upload-<32 hex>).", status=404)
        return self.uploads(account) / f"{upload_id}.jsonl"

    def result_file(self, account: str, name: str) -> Path:
        """A file of the account's results folder by its relative name, never anything outside it."""
        parts = name.split("/")
        if not parts or not all(_SEGMENT.match(part) for part in parts):
            raise LinkRefused("This link is not valid: ask for a new one.")
        return self.results(account).joinpath(*parts)
