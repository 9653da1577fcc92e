"""The one HTTP loop every backend uses: pooled connections, safe retries, streamed transfers, no leaked keys.

Backends only declare routes and wire shapes. What is shared lives here:

* Retries with capped, jittered backoff that obey ``retry-after-ms`` / ``retry-after``. A request
  marked ``idempotent=False`` (a create without an idempotency key) is retried only when it cannot
  have reached the service: a connection that never opened, or a 429. Once its body may have been
  sent, a timeout, a dropped connection or a 5xx raises :class:`OutcomeUnknown` instead.
* The credentials go only to the base URL's own origin; any other URL (presigned storage, a
  results link elsewhere) is requested without them, and redirects are never followed.
* Uploads (raw PUT or multipart) stream from disk with a known length; downloads stream into a
  file object the caller opened (the services create it exclusively), started over on each retry.
* Query strings, which carry presigned signatures, are cut out of every URL in logs and errors.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import ssl
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, BinaryIO, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import anyio
import httpx2
from pydantic import BaseModel, ValidationError

from batch_mcp import __version__
from batch_mcp.backends.base import (
    AuthenticationError,
    BackendError,
    ConflictError,
    ConnectionFailed,
    InvalidRequestError,
    NotFoundError,
    OutcomeUnknown,
    PermissionDeniedError,
    RateLimitedError,
    Redirected,
    ServiceError,
    TimedOut,
    UnexpectedResponse,
)
from batch_mcp.backends.retries import NEVER_SENT, RetryPolicy, WaitHint, retry_delay, server_wait_s
from batch_mcp.domain import Progress

log = logging.getLogger(__name__)

CHUNK_BYTES = 1024 * 1024
#: Error bodies are read up to this much: enough for any message, never a whole mistaken download.
ERROR_BODY_BYTES = 64 * 1024


# --- addresses ------------------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_base_url(url: str, variable: str) -> str:
    """An http(s) URL; plain http only on loopback, since the API key rides on every request."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{variable} must be an http(s) URL, not {url!r}")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ValueError(f"{variable}={url!r} would send the API key unencrypted; use https:// "
                         "(plain http is allowed only for loopback addresses such as the sandbox)")
    return url


def redact_url(url: str | httpx2.URL) -> str:
    """A URL without query, fragment or user info: nothing secret survives into a message."""
    parts = urlsplit(str(url))
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def path_segment(value: str) -> str:
    """An id as exactly one URL path segment, so a crafted id cannot reach another route."""
    return quote(str(value), safe="")


class _RedactLoggedUrls(logging.Filter):
    """httpx2 logs every request URL; strip their query strings before any handler sees them."""

    _URL = re.compile(r"""(https?://[^\s?#"']*)[?#][^\s"']*""", re.IGNORECASE)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "?" in message or "#" in message:
            record.msg, record.args = self._URL.sub(r"\1", message), None
        return True


logging.getLogger("httpx2").addFilter(_RedactLoggedUrls())


# --- errors from answers --------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorDetails:
    message: str | None = None
    code: str | None = None
    request_id: str | None = None


def error_details(response: httpx2.Response) -> ErrorDetails:
    """Message, code and support id from the error bodies of every API we speak.

    OpenAI-style and Anthropic nest ``{"error": {"message", "type", "code"}}``; DigitalOcean sends
    ``{"id", "message", "request_id"}``; storage answers XML or text, which yields nothing.
    """
    request_id = response.headers.get("x-request-id") or response.headers.get("request-id")
    try:
        body = response.json()
    except ValueError:
        return ErrorDetails(request_id=request_id)
    if not isinstance(body, dict):
        return ErrorDetails(request_id=request_id)
    inner = body.get("error")
    if isinstance(inner, dict):
        code = inner.get("code") or inner.get("type")
        message = inner.get("message")
    else:
        code, message = body.get("id") or body.get("code"), body.get("message")
    request_id = request_id or body.get("request_id")
    return ErrorDetails(None if message is None else str(message)[:1000], None if code is None else str(code),
                        None if request_id is None else str(request_id))


M = TypeVar("M", bound=BaseModel)


def parse_answer(model: type[M], response: httpx2.Response, *, backend: str, operation: str, api: str) -> M:
    """The answer as ``model``, or an :class:`UnexpectedResponse` naming what did not fit."""
    try:
        return model.model_validate(response.json())
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        reason = f"{where}: {first['msg']}"
    except ValueError:
        reason = "not JSON"
    raise UnexpectedResponse(f"{operation}: the answer does not look like {api} ({reason})",
                             backend=backend, status_code=response.status_code, code="unexpected_response")


_ERRORS_BY_STATUS: dict[int, type[BackendError]] = {
    400: InvalidRequestError, 401: AuthenticationError, 403: PermissionDeniedError, 404: NotFoundError,
    409: ConflictError, 413: InvalidRequestError, 422: InvalidRequestError, 429: RateLimitedError,
}


@dataclass(frozen=True)
class HttpOptions:
    """What every backend's HTTP client shares, from the server's settings."""

    retry: RetryPolicy = RetryPolicy()
    timeout_s: float = 60.0


@cache
def _trust_roots() -> ssl.SSLContext:
    """The verifying TLS context every backend's pool shares: loading the trust roots takes ~20 ms per context,
    which each pool paid at every start (and some MCP clients start a process per tool call)."""
    return httpx2.create_ssl_context()


class HttpClient:
    """One backend's connection pool and credentials, behind the shared retry loop."""

    def __init__(self, *, backend: str, base_url: str, credentials: Mapping[str, str], options: HttpOptions,
                 headers: Mapping[str, str] | None = None, wait_hint: WaitHint | None = None,
                 status_errors: Mapping[int, type[BackendError]] | None = None) -> None:
        self.backend = backend
        self.base_url = check_base_url(base_url, "the base URL").rstrip("/")
        self._origin = _origin(self.base_url)
        self._credentials = dict(credentials)
        self.retry = options.retry
        self._wait_hint = wait_hint
        self._errors = {**_ERRORS_BY_STATUS, **(status_errors or {})}
        seconds = options.timeout_s
        self._http = httpx2.AsyncClient(
            timeout=httpx2.Timeout(connect=10.0, read=seconds, write=seconds, pool=10.0),
            headers={"User-Agent": f"batch-mcp/{__version__}", **(headers or {})},
            limits=httpx2.Limits(max_connections=20, max_keepalive_connections=10),
            follow_redirects=False,
            verify=_trust_roots(),
        )

    def __repr__(self) -> str:  # never the credentials
        return f"HttpClient({self.backend!r}, {self.base_url!r})"

    def url(self, path: str) -> str:
        return self.base_url + path

    def owns(self, url: str) -> bool:
        """Whether ``url`` is on the base URL's origin (scheme, host and port): where the credentials may go."""
        try:
            return _origin(url) == self._origin
        except httpx2.InvalidURL:
            return False

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- requests ----------------------------------------------------------------------------------

    async def request(self, operation: str, method: str, url: str, *, idempotent: bool,
                      authenticated: bool = True, headers: Mapping[str, str] | None = None,
                      body: Callable[[], AsyncIterator[bytes]] | None = None, **kwargs: Any) -> httpx2.Response:
        """Send with retries and return a 2xx answer; anything else raises a typed error.

        ``body`` makes a fresh byte stream per attempt, for bodies too big to hold in memory.
        """
        sent_headers = {**self._auth_for(url, authenticated), **(headers or {})}

        async def send() -> httpx2.Response:
            if body is not None:
                return await self._http.request(method, url, headers=sent_headers, content=body(), **kwargs)
            return await self._http.request(method, url, headers=sent_headers, **kwargs)

        response = await self._with_retries(operation, url, idempotent, send)
        self.raise_for_status(response, operation, idempotent=idempotent)
        return response

    async def upload_multipart(self, operation: str, url: str, path: Path, *, fields: Mapping[str, str],
                               file_field: str = "file", content_type: str = "application/jsonl",
                               on_progress: Progress | None = None) -> httpx2.Response:
        """POST ``fields`` and the file as multipart/form-data, streamed from disk with a Content-Length.

        Retried like an idempotent call: a repeat can at worst leave an unused copy of the file.
        """
        size = path.stat().st_size
        boundary = uuid.uuid4().hex
        head = b"".join(_form_part(boundary, f'name="{_quoted(name)}"') + value.encode() + b"\r\n"
                        for name, value in fields.items())
        head += _form_part(boundary, f'name="{_quoted(file_field)}"; filename="{_quoted(path.name)}"',
                           content_type)
        tail = f"\r\n--{boundary}--\r\n".encode()
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}",
                   "Content-Length": str(len(head) + size + len(tail))}
        return await self.request(operation, "POST", url, idempotent=True, headers=headers,
                                  body=lambda: _file_body(path, size, head, tail, on_progress))

    async def put_file(self, operation: str, url: str, path: Path, *, authenticated: bool = False,
                       on_progress: Progress | None = None) -> httpx2.Response:
        """PUT the raw bytes (a presigned storage URL: no credentials unless asked and on our origin)."""
        size = path.stat().st_size
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        return await self.request(operation, "PUT", url, idempotent=True, authenticated=authenticated,
                                  headers=headers, body=lambda: _file_body(path, size, b"", b"", on_progress))

    async def download(self, operation: str, url: str, out: BinaryIO, *, authenticated: bool = True,
                       headers: Mapping[str, str] | None = None, on_progress: Progress | None = None) -> int:
        """Stream ``url`` into ``out``, a binary file the caller opened; each retry starts it over.

        Where the bytes land (a new file, never through a link) is the caller's concern. Returns the
        bytes written.
        """
        sent_headers = {**self._auth_for(url, authenticated), **(headers or {})}
        written = 0

        async def fetch() -> httpx2.Response:
            nonlocal written
            async with self._http.stream("GET", url, headers=sent_headers) as response:
                if response.status_code >= 300:
                    return await _error_answer(response)
                written = await _save(response, out, on_progress)
                return response

        response = await self._with_retries(operation, url, True, fetch)
        self.raise_for_status(response, operation, idempotent=True)
        return written

    # -- the loop ----------------------------------------------------------------------------------

    async def _with_retries(self, operation: str, url: str, idempotent: bool,
                            send: Callable[[], Awaitable[httpx2.Response]]) -> httpx2.Response:
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await send()
            except httpx2.TransportError as exc:
                delay = retry_delay(self.retry, attempt, idempotent=idempotent, error=exc)
                if delay is None:
                    raise self._transport_failure(operation, url, exc, attempt, idempotent) from None
                log.warning("%s %s: %s, attempt %d", self.backend, operation, type(exc).__name__, attempt)
                await anyio.sleep(delay)
                continue
            delay = retry_delay(self.retry, attempt, idempotent=idempotent, response=response,
                                wait_hint=self._wait_hint)
            if delay is None:
                return response
            log.warning("%s %s: HTTP %d, attempt %d, retrying in %.1f s", self.backend, operation,
                        response.status_code, attempt, delay)
            await anyio.sleep(delay)

    def _transport_failure(self, operation: str, url: str, exc: Exception, attempts: int,
                           idempotent: bool) -> BackendError:
        where = f"{self.backend} {operation} ({redact_url(url)})"
        if not idempotent and not isinstance(exc, NEVER_SENT):
            return OutcomeUnknown(f"{where}: the connection failed after the request was sent "
                                  f"({type(exc).__name__}); it may or may not have taken effect",
                                  backend=self.backend, code="outcome_unknown")
        if isinstance(exc, httpx2.TimeoutException):
            return TimedOut(f"{where}: no answer within the timeout after {attempts} attempts",
                            backend=self.backend, code="timeout")
        return ConnectionFailed(f"{where}: connection failed after {attempts} attempts ({type(exc).__name__})",
                                backend=self.backend, code="connection_failed")

    def raise_for_status(self, response: httpx2.Response, operation: str, *, idempotent: bool = True) -> None:
        """Turn an error answer into the typed error a caller can act on."""
        status = response.status_code
        if status < 300:
            return
        details = error_details(response)
        message = details.message or f"{operation} failed with HTTP {status}"
        common: dict[str, Any] = dict(backend=self.backend, status_code=status, code=details.code,
                                      request_id=details.request_id)
        if 300 <= status < 400:
            target = urlsplit(response.headers.get("location", "")).hostname or "an unnamed location"
            raise Redirected(f"{operation}: the service answered with a redirect to {target}, which is not "
                             "followed", **common)
        if not idempotent and (status >= 500 or status == 408):
            raise OutcomeUnknown(f"{operation}: {message}; the request was received, so it may or may not "
                                 "have taken effect", **common)
        if status == 429:  # the server's own wait, even "0", wins over what its budget headers suggest
            wait = server_wait_s(response)
            if wait is None and self._wait_hint:
                wait = self._wait_hint(response)
            raise RateLimitedError(message, retry_after_s=wait, **common)
        raise self._errors.get(status, ServiceError if status >= 500 else BackendError)(message, **common)

    def _auth_for(self, url: str, authenticated: bool) -> dict[str, str]:
        """The credentials, but only for our own origin (scheme, host and port)."""
        return dict(self._credentials) if authenticated and self.owns(url) else {}


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = httpx2.URL(url)
    return parts.scheme, parts.host.lower(), parts.port


def _quoted(value: str) -> str:
    """A form-data parameter value: quotes and line breaks escaped as browsers do."""
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


def _form_part(boundary: str, disposition: str, content_type: str | None = None) -> bytes:
    head = f"--{boundary}\r\nContent-Disposition: form-data; {disposition}\r\n"
    if content_type:
        head += f"Content-Type: {content_type}\r\n"
    return (head + "\r\n").encode()


async def _file_body(path: Path, size: int, head: bytes, tail: bytes,
                     on_progress: Progress | None) -> AsyncIterator[bytes]:
    """``head``, exactly ``size`` bytes of the file in chunks, ``tail``: what the Content-Length promised."""
    yield head
    sent = 0
    with path.open("rb") as source:
        while sent < size and (chunk := source.read(min(CHUNK_BYTES, size - sent))):
            sent += len(chunk)
            yield chunk
            if on_progress:
                await on_progress(sent, size)
    if sent < size:
        raise BackendError(f"{path.name} shrank while it was being uploaded ({sent} of {size} bytes)",
                           code="input_changed")
    yield tail


async def _save(response: httpx2.Response, out: BinaryIO, on_progress: Progress | None) -> int:
    out.seek(0)
    out.truncate()  # a retried download starts over
    total = int(response.headers.get("content-length") or 0)
    written = 0
    async for chunk in response.aiter_bytes(CHUNK_BYTES):
        out.write(chunk)
        written += len(chunk)
        if on_progress:
            await on_progress(written, total)
    return written


async def _error_answer(response: httpx2.Response) -> httpx2.Response:
    """The streamed error answer with at most ERROR_BODY_BYTES of its body: enough to explain it."""
    kept = bytearray()
    async for chunk in response.aiter_bytes():
        kept += chunk[: ERROR_BODY_BYTES - len(kept)]
        if len(kept) >= ERROR_BODY_BYTES:
            break
    headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in ("content-encoding",
                                                                                     "content-length")]
    return httpx2.Response(response.status_code, headers=headers, content=bytes(kept), request=response.request)
