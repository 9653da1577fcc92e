"""DigitalOcean Batch Inference as a Backend, on the shared HTTP loop.

Exactly-once comes from the API itself: ``POST /v1/batches`` takes our submission token as its
``request_id`` and answers a repeat with the job it already made, so the loop may retry a create,
and ``recover`` is simply the same create sent again. Files go to presigned storage links, which
never see the token: the upload link is renewed once if storage refuses it, and so are the result
links (each results call signs fresh ones).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from pydantic import BaseModel

from batch_mcp.backends.base import (
    ConnectionFailed,
    CreateNotConfirmed,
    InvalidRequestError,
    LinkRefused,
    NotFoundError,
    OutcomeUnknown,
    PermissionDeniedError,
    ResultsNotReady,
    ServiceError,
    UnexpectedResponse,
    check_spec,
)
from batch_mcp.backends.digitalocean.capabilities import CAPABILITIES
from batch_mcp.backends.digitalocean.hooks import STATUS_ERRORS, rate_limit_reset_s
from batch_mcp.backends.digitalocean.wire import WireBatch, WireIntent, WirePage, WireResults, to_job
from batch_mcp.backends.http import HttpClient, HttpOptions, parse_answer, path_segment
from batch_mcp.backends.settings import BackendSettings
from batch_mcp.domain import CreateSpec, Job, JobPage, JobStatus, Progress, ResultSource, StagedInput

LIST_PAGE_MAX = 100
#: The statuses the list call's ``status`` filter is documented to take (no ``queued``): others are
#: filtered on our side.
FILTERABLE = frozenset({"validating", "in_progress", "finalizing", "completed", "failed", "expired", "cancelling",
                        "cancelled"})
#: A create that failed in one of these ways may have made the job: ``recover`` finds out.
_MAYBE_CREATED = (OutcomeUnknown, ServiceError, ConnectionFailed, UnexpectedResponse)

M = TypeVar("M", bound=BaseModel)


class DigitalOceanBackend:
    """One DigitalOcean account's batch jobs."""

    def __init__(self, *, api_key: str, base_url: str | None = None, options: HttpOptions | None = None) -> None:
        self.capabilities = CAPABILITIES
        self.name = CAPABILITIES.name
        self._http = HttpClient(backend=self.name, base_url=base_url or CAPABILITIES.default_base_url,
                                credentials={"Authorization": f"Bearer {api_key}"}, options=options or HttpOptions(),
                                headers={"Accept": "application/json"}, wait_hint=rate_limit_reset_s,
                                status_errors=STATUS_ERRORS)

    @classmethod
    def from_settings(cls, settings: BackendSettings, options: HttpOptions) -> DigitalOceanBackend:
        key = settings.api_key_value()
        if key is None:
            raise ValueError(f"{CAPABILITIES.label} has no API key")
        return cls(api_key=key, base_url=settings.base_url, options=options)

    def __repr__(self) -> str:
        return f"DigitalOceanBackend({self._http.base_url!r})"

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- input -------------------------------------------------------------------------------------

    async def upload(self, path: Path, line_format: str, on_progress: Progress | None = None) -> StagedInput:
        """Ask for an upload link, then PUT the file to it without the token; a refused link is renewed once.

        ``expires_at`` is the upload link's deadline, the only one DigitalOcean states.
        """
        if line_format not in self.capabilities.line_formats:
            raise InvalidRequestError(f"{self.capabilities.label} takes openai or anthropic request lines, "
                                      f"not {line_format}", backend=self.name, code="unsupported_line_format")
        size = path.stat().st_size
        for attempt in (1, 2):
            intent = await self._call(WireIntent, "create_file", "POST", "/v1/batches/files",
                                      json={"file_name": path.name})
            try:
                await self._http.put_file("upload", intent.upload_url, path, authenticated=False,
                                          on_progress=on_progress)
            except PermissionDeniedError as exc:
                if attempt == 2:
                    raise LinkRefused("upload: storage refused two fresh upload links (expired or signature "
                                      "mismatch)", backend=self.name, status_code=exc.status_code,
                                      code="upload_url_rejected") from None
                continue
            return StagedInput(backend=self.name, ref=intent.file_id, bytes=size, filename=path.name,
                               expires_at=intent.expires_at)
        raise AssertionError("unreachable")

    # -- jobs --------------------------------------------------------------------------------------

    async def create(self, spec: CreateSpec) -> Job:
        """Create the job; a repeat with the same ``client_token`` (our ``request_id``) returns the same job.

        Retried by the loop like any idempotent call. When every attempt failed in a way that may
        have made the job, :class:`CreateNotConfirmed` says so, and ``recover`` settles it.
        """
        check_spec(self.capabilities, spec)
        body: dict[str, Any] = {"provider": spec.line_format, "file_id": spec.input_ref,
                                "completion_window": spec.completion_window, "request_id": spec.client_token}
        if spec.line_format != "anthropic":  # DigitalOcean refuses an endpoint on anthropic lines
            body["endpoint"] = spec.endpoint
        if spec.metadata:
            body["metadata"] = spec.metadata
        try:
            return to_job(await self._call(WireBatch, "create_batch", "POST", "/v1/batches", json=body), self.name)
        except _MAYBE_CREATED as exc:
            raise CreateNotConfirmed(f"{exc.message}; the job may or may not exist", client_token=spec.client_token,
                                     backend=self.name, status_code=exc.status_code, code=exc.code,
                                     request_id=exc.request_id) from exc

    async def recover(self, spec: CreateSpec) -> Job:
        """The job ``spec`` made: the same create sent again, which the API answers with the existing job
        (or makes it, if the first never arrived). Never None: either way there is exactly one job."""
        return await self.create(spec)

    async def get(self, job_id: str) -> Job:
        return to_job(await self._call(WireBatch, "get_batch", "GET", f"/v1/batches/{path_segment(job_id)}"),
                      self.name)

    async def cancel(self, job_id: str) -> Job:
        path = f"/v1/batches/{path_segment(job_id)}/cancel"
        return to_job(await self._call(WireBatch, "cancel_batch", "POST", path), self.name)

    async def list(self, status: JobStatus | None = None, limit: int = 20, cursor: str | None = None) -> JobPage:
        """One page, newest first, in either pagination style; ``cursor`` is the previous ``next_cursor``."""
        params: dict[str, Any] = {"limit": max(1, min(LIST_PAGE_MAX, limit))}
        if status is not None and status.value in FILTERABLE:
            params["status"] = status.value
        if cursor:
            params["after"] = cursor
        page = await self._call(WirePage, "list_batches", "GET", "/v1/batches", params=params)
        jobs = [to_job(batch, self.name) for batch in page.data]
        return JobPage(jobs=[job for job in jobs if status is None or job.status == status],
                       next_cursor=None if page.next_cursor == cursor else page.next_cursor)

    # -- results -----------------------------------------------------------------------------------

    async def results(self, job_id: str) -> list[ResultSource]:
        """Freshly signed links to the output and error files; their ``locator`` is the job id, from
        which ``download`` signs new ones if storage refuses these. A failed job has none."""
        links = await self._call(WireResults, "get_results", "GET", f"/v1/batches/{path_segment(job_id)}/results")
        if not links.result_available or not (links.output_url or links.error_url):
            if (await self.get(job_id)).status is JobStatus.FAILED:
                return []
            raise ResultsNotReady(f"results: the results of job {job_id} are not available yet",
                                  backend=self.name, code="results_not_ready")
        return [ResultSource(kind=kind, locator=job_id, shareable_url=url, expires_at=links.expires_at)
                for kind, url in (("output", links.output_url), ("errors", links.error_url)) if url]

    async def download(self, source: ResultSource, out: BinaryIO, on_progress: Progress | None = None) -> int:
        """GET the presigned link without the token; if storage refuses it, fetch fresh links once."""
        url = source.shareable_url
        for attempt in (1, 2):
            if url is None:
                url = await self._fresh_link(source)
            try:
                return await self._http.download("download", url, out, authenticated=False, on_progress=on_progress)
            except PermissionDeniedError as exc:
                if attempt == 2:
                    raise LinkRefused("download: storage refused a freshly signed result link", backend=self.name,
                                      status_code=exc.status_code, code="download_url_rejected") from None
                url = None
        raise AssertionError("unreachable")

    async def _fresh_link(self, source: ResultSource) -> str:
        for fresh in await self.results(source.locator):
            if fresh.kind == source.kind and fresh.shareable_url:
                return fresh.shareable_url
        raise NotFoundError(f"download: job {source.locator} no longer lists an {source.kind} file",
                            backend=self.name, code="result_file_gone")

    async def _call(self, model: type[M], operation: str, method: str, path: str, **kwargs: Any) -> M:
        """One API call, retried by the loop (every call here is safe to repeat), parsed as ``model``."""
        response = await self._http.request(operation, method, self._http.url(path), idempotent=True, **kwargs)
        return parse_answer(model, response, backend=self.name, operation=operation,
                            api="DigitalOcean's batch API")

