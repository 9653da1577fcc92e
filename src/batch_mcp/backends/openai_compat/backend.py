"""The OpenAI Batch protocol as a Backend: multipart ``/files``, ``/batches``, ``/files/{id}/content``.

The protocol has no idempotency key for creating a batch, so exactly-once comes from elsewhere:
``create`` sends once and carries our submission token in the batch metadata (plus an
``Idempotency-Key`` header a service may honour, never relied on); when its answer is lost,
``recover`` lists batches newest first back to the planned time and finds the one with our token.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, BinaryIO

from batch_mcp.backends.base import (
    TOKEN_METADATA_KEY,
    CreateNotConfirmed,
    InvalidRequestError,
    OutcomeUnknown,
    RecoveryInconclusive,
    ResultsNotReady,
    UnexpectedResponse,
    check_spec,
)
from batch_mcp.backends.http import HttpClient, HttpOptions, path_segment
from batch_mcp.backends.openai_compat.variant import Variant
from batch_mcp.backends.openai_compat.wire import WireBatch, WireFile, WirePage, parse, rate_limit_reset_s, to_job
from batch_mcp.backends.recovery import CLOCK_SKEW, listed_since
from batch_mcp.backends.settings import BackendSettings
from batch_mcp.domain import CreateSpec, Job, JobPage, JobStatus, Progress, ResultSource, StagedInput

LIST_PAGE_MAX = 100


class OpenAICompatBackend:
    """One account on one OpenAI-compatible batch service."""

    def __init__(self, variant: Variant, *, api_key: str, base_url: str | None = None,
                 options: HttpOptions | None = None) -> None:
        self.capabilities = variant.capabilities
        self.name = self.capabilities.name
        self._http = HttpClient(backend=self.name, base_url=base_url or self.capabilities.default_base_url,
                                credentials={"Authorization": f"Bearer {api_key}"}, options=options or HttpOptions(),
                                wait_hint=rate_limit_reset_s)

    @classmethod
    def from_settings(cls, variant: Variant, settings: BackendSettings, options: HttpOptions) -> OpenAICompatBackend:
        key = settings.api_key_value()
        if key is None:
            raise ValueError(f"{variant.capabilities.label} has no API key")
        return cls(variant, api_key=key, base_url=settings.base_url, options=options)

    def __repr__(self) -> str:
        return f"OpenAICompatBackend({self.name!r}, {self._http.base_url!r})"

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- input -------------------------------------------------------------------------------------

    async def upload(self, path: Path, line_format: str, on_progress: Progress | None = None) -> StagedInput:
        if line_format not in self.capabilities.line_formats:
            raise InvalidRequestError(f"{self.capabilities.label} takes openai request lines, not {line_format}",
                                      backend=self.name, code="unsupported_line_format")
        size = path.stat().st_size
        response = await self._http.upload_multipart("upload", self._http.url("/files"), path,
                                                     fields={"purpose": "batch"}, on_progress=on_progress)
        stored = parse(WireFile, response, self.name, "upload")
        if stored.bytes is not None and stored.bytes != size:
            raise UnexpectedResponse(f"upload: the service stored {stored.bytes} of {size} bytes",
                                     backend=self.name, code="upload_incomplete")
        if (stored.status or "").lower() == "error":
            raise InvalidRequestError(f"upload: the service refused the file ({stored.status_details or 'no reason'})",
                                      backend=self.name, code="file_rejected")
        return StagedInput(backend=self.name, ref=stored.id, bytes=size, filename=stored.filename or path.name,
                           expires_at=stored.expires_at)

    # -- jobs --------------------------------------------------------------------------------------

    async def create(self, spec: CreateSpec) -> Job:
        """Send the create once. Only failures that cannot have reached the service are retried."""
        check_spec(self.capabilities, spec)
        body = {
            "input_file_id": spec.input_ref,
            "endpoint": spec.endpoint,
            "completion_window": spec.completion_window,
            "metadata": {**spec.metadata, TOKEN_METADATA_KEY: spec.client_token},
        }
        try:
            response = await self._http.request("create", "POST", self._http.url("/batches"), idempotent=False,
                                                json=body, headers={"Idempotency-Key": spec.client_token})
            return to_job(parse(WireBatch, response, self.name, "create"), self.name)
        except (OutcomeUnknown, UnexpectedResponse) as exc:  # an unreadable 2xx may still be a new batch
            raise CreateNotConfirmed(f"{exc.message}; the batch may or may not exist",
                                     client_token=spec.client_token, backend=self.name,
                                     status_code=exc.status_code, code=exc.code, request_id=exc.request_id) from exc

    async def recover(self, spec: CreateSpec) -> Job | None:
        """The batch ``spec`` made, if the service has it; None if no batch since ``planned_at`` is ours.

        Our token is what identifies it. If the service keeps no metadata at all (no batch in the
        window carries any token of ours), one batch on the same input and endpoint is taken as ours;
        several are reported, never guessed between.
        """
        tags_kept, candidates = False, []
        try:
            async for job in listed_since(lambda cursor: self.list(limit=LIST_PAGE_MAX, cursor=cursor),
                                          spec.planned_at - CLOCK_SKEW, backend=self.name):
                if job.client_token == spec.client_token:
                    return job
                tags_kept = tags_kept or job.client_token is not None
                if job.client_token is None and job.input_ref == spec.input_ref and job.endpoint == spec.endpoint:
                    candidates.append(job)
        except RecoveryInconclusive as exc:
            raise RecoveryInconclusive(exc.message, backend=self.name, code=exc.code,
                                       candidates=tuple(job.id for job in candidates)) from None
        if tags_kept or not candidates:
            return None
        if len(candidates) == 1:
            return candidates[0]
        raise RecoveryInconclusive(f"recover: {len(candidates)} batches on input {spec.input_ref} since the create "
                                   "was planned, and the service keeps no metadata to tell which is ours",
                                   backend=self.name, candidates=tuple(job.id for job in candidates),
                                   code="recover_ambiguous")

    async def get(self, job_id: str) -> Job:
        return await self._batch("get", "GET", f"/batches/{path_segment(job_id)}")

    async def cancel(self, job_id: str) -> Job:
        return await self._batch("cancel", "POST", f"/batches/{path_segment(job_id)}/cancel")

    async def list(self, status: JobStatus | None = None, limit: int = 20, cursor: str | None = None) -> JobPage:
        """One page, newest first. The API cannot filter by status, so ``status`` filters this page here."""
        params: dict[str, Any] = {"limit": max(1, min(LIST_PAGE_MAX, limit))}
        if cursor:
            params["after"] = cursor
        response = await self._http.request("list", "GET", self._http.url("/batches"), idempotent=True,
                                            params=params)
        page = parse(WirePage, response, self.name, "list")
        jobs = [to_job(batch, self.name) for batch in page.data]
        # the cursor is the last item's id (the official SDK does the same, whatever last_id says)
        next_cursor = page.data[-1].id if page.has_more and page.data else None
        return JobPage(jobs=[job for job in jobs if status is None or job.status == status],
                       next_cursor=None if next_cursor == cursor else next_cursor)

    # -- results -----------------------------------------------------------------------------------

    async def results(self, job_id: str) -> list[ResultSource]:
        """The output and error files of an ended batch (either may be missing; both, if nothing ran)."""
        job = await self.get(job_id)
        if not job.is_terminal:
            raise ResultsNotReady(f"results: batch {job_id} is {job.status.value}, not ended yet",
                                  backend=self.name, code="results_not_ready")
        return [ResultSource(kind=kind, locator=job.extra[key])
                for kind, key in (("output", "output_file_id"), ("errors", "error_file_id")) if job.extra.get(key)]

    async def download(self, source: ResultSource, out: BinaryIO, on_progress: Progress | None = None) -> int:
        url = self._http.url(f"/files/{path_segment(source.locator)}/content")
        return await self._http.download("download", url, out, on_progress=on_progress)

    async def _batch(self, operation: str, method: str, path: str) -> Job:
        response = await self._http.request(operation, method, self._http.url(path), idempotent=True)
        return to_job(parse(WireBatch, response, self.name, operation), self.name)

