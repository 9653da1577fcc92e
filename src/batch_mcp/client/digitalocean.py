"""Async client for DigitalOcean Batch Inference: one pooled HTTP client, one retry loop, typed results.

Everything DigitalOcean-specific (paths, wire shapes, the presigned-upload dance) stays here and in
``batch_mcp.schemas``; the services and tools above see only normalised models and typed errors.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote, urlsplit

import anyio
import httpx2

from batch_mcp import __version__
from batch_mcp.client.errors import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    BatchAPIError,
    ConflictError,
    DownloadURLExpiredError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    RateLimitInfo,
    RedirectedError,
    ResultsNotReadyError,
    ServerError,
    UploadURLExpiredError,
    redact_url,
)
from batch_mcp.client.retry import RETRYABLE_STATUS, RetryPolicy, retry_after_seconds
from batch_mcp.schemas import ApiErrorBody, Batch, BatchPage, CreateBatchRequest, FileIntent, ResultLinks

log = logging.getLogger(__name__)
_QUERY_STRING = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s?#\"']*)\?[^\s#\"']*", re.IGNORECASE)


class _RedactQueryStrings(logging.Filter):
    """Cut query strings out of URLs in log lines: presigned URLs carry their signature there.

    Installed on httpx2's logger, whose request lines name every URL, so that no logging
    configuration (an embedding app at DEBUG, a test's caplog) can write a signature anywhere.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "?" in message:
            record.msg, record.args = _QUERY_STRING.sub(r"\1", message), None
        return True


logging.getLogger("httpx2").addFilter(_RedactQueryStrings())


DEFAULT_BASE_URL = "https://inference.do-ai.run"
CHUNK_BYTES = 1024 * 1024


def timeouts(seconds: float) -> httpx2.Timeout:
    """How long to wait for the service to read or answer (connecting and pooling keep 10 s)."""
    return httpx2.Timeout(connect=10.0, read=seconds, write=seconds, pool=10.0)


DEFAULT_TIMEOUT = timeouts(60.0)

Progress = Callable[[int, int], Awaitable[None]]

_ERRORS_BY_STATUS: dict[int, type[BatchAPIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    412: ResultsNotReadyError,
    422: BadRequestError,
    429: RateLimitedError,
}


class DigitalOceanBatchClient:
    """The seven batch operations plus streaming upload and download.

    The bearer token is attached only to requests built from ``base_url``; presigned storage URLs
    (upload PUT, result GET) are requested without it.
    """

    def __init__(
        self,
        *,
        token: str,
        base_url: str = DEFAULT_BASE_URL,
        retry: RetryPolicy | None = None,
        timeout: httpx2.Timeout = DEFAULT_TIMEOUT,
    ) -> None:
        self._token = token
        self.base_url = base_url.rstrip("/")
        self.retry = retry or RetryPolicy()
        self.rate_limit: RateLimitInfo | None = None
        self._http = httpx2.AsyncClient(
            timeout=timeout,
            headers={"User-Agent": f"batch-mcp/{__version__}"},
            limits=httpx2.Limits(max_connections=20, max_keepalive_connections=10),
            follow_redirects=False,
        )

    async def __aenter__(self) -> DigitalOceanBatchClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- the API operations ------------------------------------------------------------------------

    async def create_file_intent(self, file_name: str) -> FileIntent:
        """Register an input file and get its short-lived presigned upload URL."""
        response = await self._api("create_file", "POST", "/v1/batches/files", json={"file_name": file_name})
        return FileIntent.model_validate(response.json())

    async def create_batch(self, request: CreateBatchRequest) -> Batch:
        """Create a job. Safe to retry: the request's ``request_id`` makes the API return the same job."""
        response = await self._api("create_batch", "POST", "/v1/batches", json=request.to_wire())
        return Batch.model_validate(response.json())

    async def get_batch(self, batch_id: str) -> Batch:
        response = await self._api("get_batch", "GET", f"/v1/batches/{_segment(batch_id)}")
        return Batch.model_validate(response.json())

    async def list_batches(self, *, status: str | None = None, limit: int = 20, after: str | None = None) -> BatchPage:
        """One page, newest first. ``after`` is the previous page's ``next_cursor``."""
        params: dict[str, Any] = {"limit": max(1, min(100, limit))}
        if status:
            params["status"] = status
        if after:
            params["after"] = after
        response = await self._api("list_batches", "GET", "/v1/batches", params=params)
        return BatchPage.from_wire(response.json())

    async def iter_batches(self, *, status: str | None = None, page_size: int = 100) -> AsyncIterator[Batch]:
        """Every job, across all pages, in either pagination style."""
        after: str | None = None
        while True:
            page = await self.list_batches(status=status, limit=page_size, after=after)
            for batch in page.data:
                yield batch
            if not page.has_more or not page.next_cursor or page.next_cursor == after:
                return
            after = page.next_cursor

    async def cancel_batch(self, batch_id: str) -> Batch:
        response = await self._api("cancel_batch", "POST", f"/v1/batches/{_segment(batch_id)}/cancel")
        return Batch.model_validate(response.json())

    async def get_results(self, batch_id: str) -> ResultLinks:
        """Fresh presigned links to the output and error files; raises if they are not ready yet."""
        response = await self._api("get_results", "GET", f"/v1/batches/{_segment(batch_id)}/results")
        links = ResultLinks.from_wire(response.json(), batch_id=batch_id)
        if not links.result_available:
            raise ResultsNotReadyError("Batch results are not available yet", status_code=response.status_code,
                                       code="result_available_false")
        return links

    # -- storage transfers (presigned URLs, never authenticated) ---------------------------------

    async def upload_file(self, path: Path, *, file_name: str | None = None, on_progress: Progress | None = None,
                          max_intents: int = 3) -> FileIntent:
        """Create an intent and stream ``path`` to it; a refused or expired URL gets a new intent."""
        for attempt in range(1, max_intents + 1):
            intent = await self.create_file_intent(file_name or path.name)
            try:
                await self.upload_to_url(intent.upload_url, path, on_progress=on_progress)
                return intent
            except UploadURLExpiredError:
                if attempt == max_intents:
                    raise
                log.info("upload URL refused (expired or signature mismatch); requesting a new one")
        raise AssertionError("unreachable")

    async def upload_to_url(self, url: str, path: Path, *, on_progress: Progress | None = None) -> int:
        """PUT the file's bytes in 1 MiB chunks with a Content-Length, retrying the same URL on faults."""
        size = path.stat().st_size
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}

        async def send() -> httpx2.Response:
            return await self._http.put(url, content=_file_chunks(path, size, on_progress), headers=headers)

        response = await self._with_retries("upload", url, send)
        if response.status_code == 403:
            raise UploadURLExpiredError("Storage refused the upload URL: it expired or its signature does not match",
                                        status_code=403, code="upload_url_rejected")
        _raise_for_status(response, "upload")
        return size

    async def download(self, url: str, out: BinaryIO, *, on_progress: Progress | None = None) -> int:
        """Stream a presigned result file into ``out`` (from its start again on each retry); return its size.

        Where the bytes land is the caller's concern: the services write them through a partial file
        that is moved into place only once complete.
        """
        written = 0

        async def fetch() -> httpx2.Response:
            nonlocal written
            async with self._http.stream("GET", url) as response:
                if response.status_code == 200:
                    out.seek(0)
                    out.truncate()
                    total = int(response.headers.get("content-length") or 0)
                    written = 0
                    async for chunk in response.aiter_bytes(CHUNK_BYTES):
                        out.write(chunk)
                        written += len(chunk)
                        if on_progress:
                            await on_progress(written, total)
                else:
                    await response.aread()  # an error body, read so it can be explained
                return response

        response = await self._with_retries("download", url, fetch)
        if response.status_code == 403:
            raise DownloadURLExpiredError("Storage refused the download URL: it expired",
                                          status_code=403, code="download_url_rejected")
        _raise_for_status(response, "download")
        return written

    # -- the retry loop ----------------------------------------------------------------------------

    async def _api(self, operation: str, method: str, path: str, **kwargs: Any) -> httpx2.Response:
        url = self.base_url + path
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}

        async def send() -> httpx2.Response:
            return await self._http.request(method, url, headers=headers, **kwargs)

        response = await self._with_retries(operation, url, send)
        self.rate_limit = RateLimitInfo.from_headers(response.headers) or self.rate_limit
        _raise_for_status(response, operation)
        return response

    async def _with_retries(self, operation: str, url: str, send: Callable[[], Awaitable[httpx2.Response]]
                            ) -> httpx2.Response:
        """Send until a non-retryable answer, or until the policy gives up; then return or explain."""
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await send()
            except httpx2.TransportError as exc:
                if not self.retry.should_retry(attempt):
                    if isinstance(exc, httpx2.TimeoutException):
                        raise APITimeoutError(f"{operation}: no answer from {redact_url(url)} within the timeout "
                                              f"after {attempt} attempts") from None
                    raise APIConnectionError(f"{operation}: connection to {redact_url(url)} failed "
                                             f"after {attempt} attempts ({type(exc).__name__})") from None
                log.warning("%s: %s, attempt %d", operation, type(exc).__name__, attempt)
                await anyio.sleep(self.retry.delay(attempt))
                continue
            if response.status_code not in RETRYABLE_STATUS:
                return response
            wait = retry_after_seconds(response)
            if not self.retry.should_retry(attempt, wait):
                return response
            log.warning("%s: HTTP %d, attempt %d, retrying", operation, response.status_code, attempt)
            await anyio.sleep(self.retry.delay(attempt, wait))


def _segment(value: str) -> str:
    """An id as one URL path segment, so a crafted id cannot reach another route."""
    return quote(str(value), safe="")


async def _file_chunks(path: Path, size: int, on_progress: Progress | None) -> AsyncIterator[bytes]:
    """At most the ``size`` bytes announced in Content-Length, even if the file grows meanwhile."""
    sent = 0
    with path.open("rb") as source:
        while sent < size and (chunk := source.read(min(CHUNK_BYTES, size - sent))):
            sent += len(chunk)
            yield chunk
            if on_progress:
                await on_progress(sent, size)


def _raise_for_status(response: httpx2.Response, operation: str) -> None:
    status = response.status_code
    if status < 300:
        return
    if status < 400:
        target = urlsplit(response.headers.get("location", "")).hostname or "an unnamed location"
        raise RedirectedError(f"{operation}: the service answered with a redirect to {target}, which is not "
                              "followed", status_code=status, code="redirect")
    try:
        body = ApiErrorBody.model_validate(response.json())
        message, code, request_id = body.message or f"{operation} failed", body.id, body.request_id
    except ValueError:  # storage answers XML or plain text
        message, code, request_id = f"{operation} failed with HTTP {status}", None, None
    rate_limit = RateLimitInfo.from_headers(response.headers)
    common = {"status_code": status, "code": code, "request_id": request_id, "rate_limit": rate_limit}
    if status == 429:
        raise RateLimitedError(message, retry_after_s=retry_after_seconds(response), **common)
    error_type = _ERRORS_BY_STATUS.get(status, ServerError if status >= 500 else BatchAPIError)
    raise error_type(message, **common)
