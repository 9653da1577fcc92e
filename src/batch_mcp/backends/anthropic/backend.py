"""Anthropic Message Batches as a Backend: the requests go inline in the create body, results come as one stream.

There is nothing to upload: ``upload`` checks the file is there and hands its path on, and ``create``
streams the file's lines into the body. The API has no idempotency key and keeps no metadata, so
exactly-once rests on two rules: ``create`` is never sent again once its body may have reached the
service (a lost answer raises :class:`CreateNotConfirmed`), and ``recover`` lists the batches created
since the planned time (on the service's clock) and takes the one with our request count that no other
submission of ours made; several are reported, never guessed between.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import anyio

from batch_mcp.backends.anthropic.body import InlineBody
from batch_mcp.backends.anthropic.capabilities import CAPABILITIES
from batch_mcp.backends.anthropic.wire import WireBatch, WireDeleted, WirePage, parse, rate_limit_reset_s, to_job
from batch_mcp.backends.base import (
    ConflictError,
    CreateNotConfirmed,
    InvalidRequestError,
    NotFoundError,
    OutcomeUnknown,
    RecoveryInconclusive,
    ResultsNotReady,
    UnexpectedResponse,
    check_spec,
)
from batch_mcp.backends.http import HttpClient, HttpOptions, path_segment
from batch_mcp.backends.recovery import listed_since, planned_on_service_clock, service_offset
from batch_mcp.backends.settings import BackendSettings
from batch_mcp.domain import CreateSpec, Job, JobPage, JobStatus, Progress, ResultSource, StagedInput

#: The API version whose shapes this module reads (the documented one; newer SDKs send a later date).
API_VERSION = "2023-06-01"
BATCHES = "/v1/messages/batches"
LIST_PAGE_MAX = 1000


class AnthropicBackend:
    """One Anthropic account's Message Batches."""

    def __init__(self, *, api_key: str, base_url: str | None = None, options: HttpOptions | None = None) -> None:
        self.capabilities = CAPABILITIES
        self.name = CAPABILITIES.name
        self._http = HttpClient(backend=self.name, base_url=base_url or CAPABILITIES.default_base_url,
                                credentials={"x-api-key": api_key}, options=options or HttpOptions(),
                                headers={"anthropic-version": API_VERSION}, wait_hint=rate_limit_reset_s)

    @classmethod
    def from_settings(cls, settings: BackendSettings, options: HttpOptions) -> AnthropicBackend:
        key = settings.api_key_value()
        if key is None:
            raise ValueError("Anthropic has no API key")
        return cls(api_key=key, base_url=settings.base_url, options=options)

    def __repr__(self) -> str:
        return f"AnthropicBackend({self._http.base_url!r})"

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- input -------------------------------------------------------------------------------------

    async def upload(self, path: Path, line_format: str, on_progress: Progress | None = None) -> StagedInput:
        """Nothing leaves the machine: the file must be readable here, and its path is what ``create`` takes."""
        if line_format not in self.capabilities.line_formats:
            raise InvalidRequestError(f"Anthropic takes anthropic request lines ({{custom_id, params}}), not "
                                      f"{line_format}", backend=self.name, code="unsupported_line_format")
        try:
            if not path.is_file():
                raise InvalidRequestError(f"{path.name} is not a file", backend=self.name, code="input_missing")
            with path.open("rb"):
                size = path.stat().st_size
        except OSError as exc:
            raise InvalidRequestError(f"{path.name} cannot be read ({exc.strerror or type(exc).__name__})",
                                      backend=self.name, code="input_unreadable") from None
        if on_progress:
            await on_progress(size, size)
        return StagedInput(backend=self.name, ref=str(path.absolute()), bytes=size, filename=path.name)

    async def _body(self, input_ref: str) -> InlineBody:
        path = Path(input_ref)
        try:
            body = await anyio.to_thread.run_sync(InlineBody.scan, path)
        except OSError as exc:
            raise InvalidRequestError(f"the input file {path.name} cannot be read ({exc.strerror or 'gone'}); "
                                      "stage it again", backend=self.name, code="input_unreadable") from None
        caps = self.capabilities
        if body.requests == 0:
            raise InvalidRequestError(f"{path.name} holds no requests", backend=self.name, code="input_empty")
        if caps.max_requests is not None and body.requests > caps.max_requests:
            raise InvalidRequestError(f"{path.name} holds {body.requests:,} requests; one Anthropic batch takes at "
                                      f"most {caps.max_requests:,}: split it", backend=self.name,
                                      code="too_many_requests")
        if caps.max_bytes is not None and body.length > caps.max_bytes:
            raise InvalidRequestError(f"the requests of {path.name} make a {body.length:,}-byte body; one Anthropic "
                                      f"batch takes at most {caps.max_bytes:,} bytes: split it", backend=self.name,
                                      code="input_too_large")
        return body

    # -- jobs --------------------------------------------------------------------------------------

    async def create(self, spec: CreateSpec) -> Job:
        """Stream the requests in one POST, sent once: only failures that cannot have reached the service
        (no connection, a 429) are retried."""
        check_spec(self.capabilities, spec)
        body = await self._body(spec.input_ref)
        headers = {"Content-Type": "application/json", "Content-Length": str(body.length)}
        try:
            response = await self._http.request("create", "POST", self._http.url(BATCHES), idempotent=False,
                                                headers=headers, body=body.stream)
            return to_job(parse(WireBatch, response, self.name, "create"), self.name)
        except (OutcomeUnknown, UnexpectedResponse) as exc:  # an unreadable 2xx may still be a new batch
            raise CreateNotConfirmed(f"{exc.message}; the batch may or may not exist",
                                     client_token=spec.client_token, backend=self.name,
                                     status_code=exc.status_code, code=exc.code, request_id=exc.request_id) from exc

    async def recover(self, spec: CreateSpec) -> Job | None:
        """The batch ``spec`` made: the one batch with as many requests as its file, created since ``planned_at``
        on the service's clock (read from its ``Date`` header) and not one that ``spec.not_ours`` names.

        None when no such batch exists; :class:`RecoveryInconclusive` with the candidates when several
        do, or when the file can no longer be counted.
        """
        try:
            count: int | None = (await self._body(spec.input_ref)).requests
        except InvalidRequestError:
            count = None  # every batch in the window is then a candidate
        first, offset = await self._page(None, LIST_PAGE_MAX)

        async def pages(cursor: str | None) -> JobPage:
            return first if cursor is None else (await self._page(cursor, LIST_PAGE_MAX))[0]

        candidates: list[Job] = []
        try:
            async for job in listed_since(pages, planned_on_service_clock(spec.planned_at, offset),
                                          backend=self.name):
                if job.id not in spec.not_ours and (count is None or (job.counts is not None
                                                                      and job.counts.total == count)):
                    candidates.append(job)
        except RecoveryInconclusive as exc:
            raise RecoveryInconclusive(exc.message, backend=self.name, code=exc.code,
                                       candidates=tuple(job.id for job in candidates)) from None
        if not candidates:
            return None
        if count is not None and len(candidates) == 1:
            return candidates[0]
        reason = (f"{len(candidates)} batches of {count:,} requests, none made by another submission here, were "
                  "created since the create was planned" if count is not None else
                  f"the input file {Path(spec.input_ref).name} can no longer be read to count its requests")
        raise RecoveryInconclusive(f"recover: {reason}, and Anthropic keeps no metadata to tell which is ours",
                                   backend=self.name, candidates=tuple(job.id for job in candidates),
                                   code="recover_ambiguous")

    async def get(self, job_id: str) -> Job:
        return await self._batch("get", "GET", f"{BATCHES}/{path_segment(job_id)}")

    async def cancel(self, job_id: str) -> Job:
        return await self._batch("cancel", "POST", f"{BATCHES}/{path_segment(job_id)}/cancel")

    async def list(self, status: JobStatus | None = None, limit: int = 20, cursor: str | None = None) -> JobPage:
        """One page, newest first. The API cannot filter by status, so ``status`` filters this page here."""
        page, _ = await self._page(cursor, limit)
        return JobPage(jobs=[job for job in page.jobs if status is None or job.status == status],
                       next_cursor=page.next_cursor)

    async def _page(self, cursor: str | None, limit: int) -> tuple[JobPage, timedelta | None]:
        """One page of the listing, and how far the service's clock is ahead of ours (None if it says not)."""
        params: dict[str, Any] = {"limit": max(1, min(LIST_PAGE_MAX, limit))}
        if cursor:
            params["after_id"] = cursor
        response = await self._http.request("list", "GET", self._http.url(BATCHES), idempotent=True, params=params)
        page = parse(WirePage, response, self.name, "list")
        last = page.last_id or (page.data[-1].id if page.data else None)
        next_cursor = last if page.has_more and last != cursor else None
        jobs = [to_job(batch, self.name) for batch in page.data]
        return JobPage(jobs=jobs, next_cursor=next_cursor), service_offset(response)

    async def delete(self, job_id: str) -> None:
        """Delete an ended batch and its results for good. One still processing is refused before anything
        is sent: cancel it and wait until it has ended."""
        job = await self.get(job_id)
        if not job.is_terminal:
            raise ConflictError(f"batch {job_id} is {job.raw_status}; only an ended batch can be deleted: cancel "
                                "it and wait until it has ended", backend=self.name, code="batch_not_ended")
        response = await self._http.request("delete", "DELETE", self._http.url(f"{BATCHES}/{path_segment(job_id)}"),
                                            idempotent=True)
        parse(WireDeleted, response, self.name, "delete")

    # -- results -----------------------------------------------------------------------------------

    async def results(self, job_id: str) -> list[ResultSource]:
        """The one results stream of an ended batch, at the ``results_url`` the batch names."""
        job = await self.get(job_id)
        if not job.is_terminal:
            raise ResultsNotReady(f"results: batch {job_id} is {job.raw_status}, not ended yet",
                                  backend=self.name, code="results_not_ready")
        if "archived_at" in job.extra:
            raise NotFoundError(f"results: the results of batch {job_id} were archived at {job.extra['archived_at']} "
                                "(29 days after creation) and can no longer be downloaded", backend=self.name,
                                code="results_archived")
        url = job.extra.get("results_url")
        return [ResultSource(kind="combined", locator=self._own_url(url))] if url else []

    async def download(self, source: ResultSource, out: BinaryIO, on_progress: Progress | None = None) -> int:
        return await self._http.download("download", self._own_url(source.locator), out, on_progress=on_progress)

    def _own_url(self, url: str) -> str:
        """``url`` made absolute on the base URL, and refused unless it is there: the key goes nowhere else."""
        absolute = self._http.url(url) if url.startswith("/") else url
        if not self._http.owns(absolute):
            host = urlsplit(absolute).hostname or "no host"
            raise UnexpectedResponse(f"results: the batch's results_url is on {host}, not on "
                                     f"{urlsplit(self._http.base_url).hostname}; the API key is sent only to its own "
                                     "host, so nothing was fetched. Check ANTHROPIC_BASE_URL", backend=self.name,
                                     code="results_url_elsewhere")
        return absolute

    async def _batch(self, operation: str, method: str, path: str) -> Job:
        response = await self._http.request(operation, method, self._http.url(path), idempotent=True)
        return to_job(parse(WireBatch, response, self.name, operation), self.name)
