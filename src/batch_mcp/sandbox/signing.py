"""HMAC-presigned storage URLs, standing in for the Spaces (S3) presigned URLs of the real service.

A URL grants one method on one path until its ``expires`` epoch second. The signature covers all
three plus a random nonce (so every URL handed out is new), so a tampered path, method or expiry is
refused, and the URL needs no Authorization header.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from urllib.parse import urlencode


class UrlSigner:
    """Signs and checks storage URLs with a key that lives only as long as the sandbox."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or secrets.token_bytes(32)

    def _signature(self, method: str, path: str, expires: int, nonce: str) -> str:
        message = f"{method.upper()}\n{path}\n{expires}\n{nonce}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def presign(self, origin: str, method: str, path: str, expires: int) -> str:
        """An absolute URL for ``method`` on ``path`` (which starts with ``/``), valid until ``expires``."""
        nonce = secrets.token_hex(8)
        query = urlencode(
            {"expires": expires, "nonce": nonce, "signature": self._signature(method, path, expires, nonce)}
        )
        return f"{origin.rstrip('/')}{path}?{query}"

    def refusal(self, method: str, path: str, query: Mapping[str, str], now: float) -> tuple[str, str] | None:
        """Why the URL is refused, as an S3 error ``(code, message)``, or ``None`` when it is valid."""
        expires, nonce, signature = (query.get(name, "") for name in ("expires", "nonce", "signature"))
        if not (expires.isdigit() and nonce and signature):
            return (
                "AccessDenied",
                "Query-string authentication requires the expires, nonce and signature parameters.",
            )
        if not hmac.compare_digest(self._signature(method, path, int(expires), nonce), signature):
            return (
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided.",
            )
        if now >= int(expires):
            return "AccessDenied", "Request has expired."
        return None
