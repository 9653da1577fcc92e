"""The batch workflow: validate, upload, submit, wait, fetch. Plain async functions over the client and store.

This is where the product's promises are kept: a file is checked before anything leaves the
machine, a submission is recorded before the API sees it (so a retry or a restart re-sends the same
idempotency key instead of creating a second job), and every job the server created stays listed.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from datetime import UTC, datetime
from typing import Any, NamedTuple

import anyio

from batch_mcp.client import (
    BadRequestError,
    BatchAPIError,
    ConflictError,
    DigitalOceanBatchClient,
    DownloadURLExpiredError,
    NotFoundError,
    PermissionDeniedError,
    Progress,
    ResultsNotReadyError,
)
from batch_mcp.schemas import RESULT_STATUSES, Batch, CreateBatchRequest
from batch_mcp.schemas.jobs import (
    BatchList,
    BatchView,
    DownloadSummary,
    ResultLinksView,
    SubmitResult,
    UploadResult,
    WaitResult,
)
from batch_mcp.schemas.preflight import PreflightReport
from batch_mcp.services.preflight import Limits, preflight
from batch_mcp.services.results import tally_results
from batch_mcp.services.workspace import Workspace
from batch_mcp.store import JobRecord, JobStore, UploadRecord, submission_fingerprint

log = logging.getLogger(__name__)

StatusListener = Callable[[Batch], Awaitable[None]]


class Fingerprint(NamedTuple):
    """What makes two submissions the same: content (or file_id), provider, endpoint, metadata."""

    content: str
    provider: str
    endpoint: str | None
    metadata: dict[str, str] | None
#: Statuses after which submitting the same file again makes a new job rather than returning the old one.
_RESUBMITTABLE = frozenset({"failed", "cancelled", "expired"})
_MAX_POLL_INTERVAL_S = 60.0
#: API answers that mean a planned create will never succeed as sent.
_REFUSED = (BadRequestError, NotFoundError, ConflictError, PermissionDeniedError)


class NotConfigured(Exception):
    """No API token: the server runs, but cannot reach the API."""


class InvalidBatchFile(Exception):
    """The preflight check found errors; nothing was uploaded."""

    def __init__(self, report: PreflightReport) -> None:
        self.report = report
        problems = "; ".join(
            (f"line {p.line}: " if p.line else "") + p.message for p in report.problems if p.severity == "error"
        )
        more = report.error_count - sum(1 for p in report.problems if p.severity == "error")
        super().__init__(
            f"{report.path} has {report.error_count} error(s); nothing was uploaded. {problems}"
            + (f" (and {more} more)" if more > 0 else "")
            + ". Fix the file (validate_batch_file lists the problems) and try again."
        )


class ResultsExist(Exception):
    """A download would overwrite files the user already has."""


class BatchService:
    def __init__(
        self,
        *,
        client: DigitalOceanBatchClient | None,
        store: JobStore,
        workspace: Workspace,
        limits: Limits | None = None,
        default_poll_interval_s: float = 5.0,
    ) -> None:
        self._client = client
        self.store = store
        self.workspace = workspace
        self.limits = limits or Limits()
        self.default_poll_interval_s = default_poll_interval_s
        self.status_listeners: list[StatusListener] = []

    @property
    def client(self) -> DigitalOceanBatchClient:
        if self._client is None:
            raise NotConfigured(
                "No API token is configured. Set MODEL_ACCESS_KEY (or DIGITALOCEAN_TOKEN) in the MCP server's "
                "environment and restart it, or run `batch-mcp serve --sandbox` to try every tool offline."
            )
        return self._client

    # -- local checks ------------------------------------------------------------------------------

    async def validate(self, path: str, provider: str | None = None, endpoint: str | None = None,
                       workspace: Workspace | None = None) -> PreflightReport:
        real = (workspace or self.workspace).input_file(path)
        return await anyio.to_thread.run_sync(lambda: preflight(real, provider, endpoint, self.limits))

    async def _checked(self, path: str, provider: str | None, endpoint: str | None,
                       workspace: Workspace | None) -> PreflightReport:
        report = await self.validate(path, provider, endpoint, workspace)
        if not report.valid:
            raise InvalidBatchFile(report)
        return report

    # -- upload and submit ---------------------------------------------------------------------------

    async def upload(self, path: str, provider: str | None = None, endpoint: str | None = None, *,
                     on_progress: Progress | None = None, workspace: Workspace | None = None) -> UploadResult:
        report = await self._checked(path, provider, endpoint, workspace)
        return await self._upload_checked(report, on_progress)

    async def _upload_checked(self, report: PreflightReport, on_progress: Progress | None) -> UploadResult:
        warnings = [p.message for p in report.problems if p.severity == "warning"]
        common = {"path": report.path, "bytes": report.bytes, "requests": report.requests, "sha256": report.sha256,
                  "provider": report.provider, "endpoint": report.endpoint, "warnings": warnings}
        reusable = self.store.find_reusable_upload(report.sha256, datetime.now(UTC))
        if reusable is not None:
            return UploadResult(file_id=reusable.file_id, upload_expires_at=reusable.intent_expires_at, reused=True,
                                **common)
        intent = await self.client.upload_file(Path(report.path), on_progress=on_progress)
        self.store.record_upload(UploadRecord(
            file_id=intent.file_id, path=Path(report.path), sha256=report.sha256, size_bytes=report.bytes,
            line_count=report.requests, intent_expires_at=intent.expires_at, completed_at=datetime.now(UTC),
        ))
        return UploadResult(file_id=intent.file_id, upload_expires_at=intent.expires_at, reused=False, **common)

    async def submit(self, path: str, provider: str | None = None, endpoint: str | None = None,
                     metadata: dict[str, str] | None = None, *, new: bool = False,
                     on_progress: Progress | None = None, workspace: Workspace | None = None) -> SubmitResult:
        """Validate, upload (or reuse an upload), and create the job exactly once."""
        report = await self._checked(path, provider, endpoint, workspace)
        key = Fingerprint(report.sha256, report.provider, report.endpoint, metadata)
        if not new and (existing := await self._existing(key)) is not None:
            return existing.model_copy(update={"requests": report.requests})
        upload = await self._upload_checked(report, on_progress)
        result = await self._create(key, upload.file_id, path=Path(report.path))
        return result.model_copy(update={"requests": report.requests, "warnings": upload.warnings})

    async def create(self, file_id: str, provider: str, endpoint: str | None = None,
                     metadata: dict[str, str] | None = None, *, new: bool = False) -> SubmitResult:
        """Create a job from an uploaded file; the same call again returns the same job."""
        key = Fingerprint(f"file_id:{file_id}", provider, endpoint, metadata)
        if not new and (existing := await self._existing(key)) is not None:
            return existing
        return await self._create(key, file_id, path=None)

    async def _existing(self, key: Fingerprint) -> SubmitResult | None:
        """The job an identical earlier submission made (re-sent if the API never answered)."""
        submission = self.store.find_submission_by_fingerprint(submission_fingerprint(*key))
        if submission is None:
            return None
        if submission.batch_id is None:  # planned, but the answer was lost: same request_id, same job
            batch = await self._send_create(submission.request_id, submission.file_id, submission.provider,
                                            submission.endpoint, submission.metadata)
        else:
            batch = await self.get(submission.batch_id)
            if batch.status in _RESUBMITTABLE:
                return None
        return SubmitResult(batch=BatchView.from_batch(batch), file_id=submission.file_id,
                            request_id=submission.request_id, reused_existing_job=True)

    async def _create(self, key: Fingerprint, file_id: str, *, path: Path | None) -> SubmitResult:
        submission = self.store.plan_submission(sha256=key.content, path=path, file_id=file_id,
                                                provider=key.provider, endpoint=key.endpoint, metadata=key.metadata)
        try:
            batch = await self._send_create(submission.request_id, file_id, key.provider, key.endpoint,
                                            key.metadata)
        except _REFUSED:
            self.store.discard_submission(submission.request_id)  # refused for good: never re-send it
            raise
        return SubmitResult(batch=BatchView.from_batch(batch), file_id=file_id, request_id=submission.request_id,
                            reused_existing_job=False)

    async def _send_create(self, request_id: str, file_id: str, provider: str, endpoint: str | None,
                           metadata: dict[str, str] | None) -> Batch:
        request = CreateBatchRequest(file_id=file_id, provider=provider, endpoint=endpoint,  # type: ignore[arg-type]
                                     request_id=request_id, metadata=metadata)
        batch = await self.client.create_batch(request)
        self.store.attach_batch(request_id, batch)
        await self._seen(batch)
        return batch

    async def resume_pending(self) -> list[Batch]:
        """After a crash: re-send every create call whose answer was never recorded (same request_id)."""
        resumed = []
        for submission in self.store.pending_submissions():
            try:
                resumed.append(await self._send_create(submission.request_id, submission.file_id,
                                                       submission.provider, submission.endpoint,
                                                       submission.metadata))
            except _REFUSED as exc:
                log.warning("submission %s was refused (%s); forgetting it", submission.request_id, exc)
                self.store.discard_submission(submission.request_id)
            except Exception as exc:  # one bad record must not stop the others; it stays pending
                log.warning("could not resume submission %s: %s", submission.request_id, exc)
        return resumed

    # -- watch -------------------------------------------------------------------------------------

    async def get(self, batch_id: str) -> Batch:
        batch = await self.client.get_batch(batch_id)
        await self._seen(batch)
        return batch

    async def _seen(self, batch: Batch) -> None:
        """Record the latest state; tell listeners (resource subscribers) when the status changed."""
        previous = self.store.get_job(batch.batch_id)
        self.store.upsert_batch(batch)
        if previous is None or previous.status != batch.status:
            for listener in self.status_listeners:
                await listener(batch)

    async def wait(self, batch_id: str, timeout_s: float, poll_interval_s: float | None = None,
                   on_progress: Progress | None = None) -> WaitResult:
        """Poll until a terminal status or the timeout, backing off while nothing changes."""
        start = time.monotonic()
        interval = poll_interval_s or self.default_poll_interval_s
        last_done = -1
        while True:
            batch = await self.get(batch_id)
            counts = batch.request_counts
            done = counts.completed + counts.failed
            if on_progress and done != last_done:
                await on_progress(done, counts.total)
            waited = time.monotonic() - start
            view = BatchView.from_batch(batch)
            if batch.is_terminal:
                return WaitResult(batch=view, timed_out=False, waited_s=round(waited, 2), next_step=view.next_step)
            if waited >= timeout_s:
                return WaitResult(batch=view, timed_out=True, waited_s=round(waited, 2),
                                  next_step=f"Still {batch.status} after {waited:.0f} s; the job keeps running. "
                                            "Call wait_for_batch again, or get_batch later.")
            interval = interval if done != last_done else min(interval * 1.5, _MAX_POLL_INTERVAL_S)
            last_done = done
            await anyio.sleep(min(interval, max(0.0, timeout_s - waited)))

    async def list(self, status: str | None = None, limit: int = 20, cursor: str | None = None) -> BatchList:
        page = await self.client.list_batches(status=status, limit=limit, after=cursor)
        for batch in page.data:
            if self.store.get_job(batch.batch_id) is not None:
                self.store.upsert_batch(batch)
        return BatchList(batches=[BatchView.from_batch(b) for b in page.data], next_cursor=page.next_cursor,
                         has_more=page.has_more)

    async def cancel(self, batch_id: str) -> BatchView:
        batch = await self.client.cancel_batch(batch_id)
        await self._seen(batch)
        return BatchView.from_batch(batch)

    async def jobs_overview(self, limit: int = 100) -> dict[str, Any]:
        """The jobs this server recorded, merged with the API's newest; the API's view of a job wins."""
        jobs: dict[str, dict[str, Any]] = {}
        for record in self.store.list_jobs(limit=limit):
            view = BatchView.from_batch(record.last_seen).model_dump(mode="json")
            jobs[record.batch_id] = {**view, **_local_fields(record)}
        note = None
        try:
            page = await self.client.list_batches(limit=min(limit, 100))
            for batch in page.data:
                live = BatchView.from_batch(batch).model_dump(mode="json")
                jobs[batch.batch_id] = {**jobs.get(batch.batch_id, {"tracked_locally": False}), **live}
        except (NotConfigured, BatchAPIError) as exc:
            note = f"Live status unavailable, showing the last recorded status: {exc}"
        ordered = sorted(jobs.values(), key=lambda j: j.get("created_at") or "", reverse=True)
        return {"jobs": ordered, "count": len(ordered), "note": note}

    async def job_detail(self, batch_id: str) -> dict[str, Any]:
        """One job: live status when the API answers, plus what the store recorded."""
        record = self.store.get_job(batch_id)
        try:
            batch = await self.get(batch_id)
        except (NotConfigured, BatchAPIError):
            if record is None:
                raise
            batch = record.last_seen
        record = self.store.get_job(batch_id)
        local = _local_fields(record) if record else {"tracked_locally": False}
        return {**BatchView.from_batch(batch).model_dump(mode="json"), **local}

    # -- results -----------------------------------------------------------------------------------

    async def result_links(self, batch_id: str) -> ResultLinksView:
        links = await self.client.get_results(batch_id)
        return ResultLinksView(batch_id=batch_id, output_file_url=links.output_file_url,
                               error_file_url=links.error_file_url, expires_at=links.expires_at)

    async def download(self, batch_id: str, dest_dir: str | None = None, *, overwrite: bool = False,
                       on_progress: Progress | None = None, workspace: Workspace | None = None) -> DownloadSummary:
        """Stream the result files into an allowed folder and summarise them."""
        batch = await self.get(batch_id)
        if batch.status not in RESULT_STATUSES and not batch.result_available:
            raise ResultsNotReadyError(
                f"Batch {batch_id} is {batch.status}; results exist only once it is completed, cancelled or expired",
                code="results_not_ready")
        workspace = workspace or self.workspace
        folder = workspace.output_dir(dest_dir, default=workspace.allowed_dirs[0] / "batch-results")
        stem = re.sub(r"[^A-Za-z0-9_.-]", "_", batch.batch_id)
        targets = {"output": folder / f"{stem}.output.jsonl", "errors": folder / f"{stem}.errors.jsonl"}
        if not overwrite and (clash := [str(p) for p in targets.values() if p.exists()]):
            raise ResultsExist(f"{', '.join(clash)} already exist(s); pass overwrite=true to replace, "
                               "or another dest_dir.")
        saved = await self._download_files(batch_id, targets, on_progress)
        tally = await anyio.to_thread.run_sync(lambda: tally_results(saved.get("output"), saved.get("errors")))
        self.store.record_download(batch_id, _str(saved.get("output")), _str(saved.get("errors")))
        missing = max(0, batch.request_counts.total - len(tally.outcomes))
        next_step = (f"{tally.failed} request(s) failed and {missing} have no result: resubmit those requests in a "
                     "new batch if you need them." if tally.failed or missing else
                     "All requests succeeded: read the results file for the outputs.")
        return DownloadSummary(
            batch_id=batch_id, status=batch.status, output_path=_str(saved.get("output")),
            error_path=_str(saved.get("errors")), succeeded=tally.succeeded, failed=tally.failed, missing=missing,
            error_codes=tally.error_codes(), usage=tally.usage, preview=tally.preview, next_step=next_step,
        )

    async def _download_files(self, batch_id: str, targets: dict[str, Path],
                              on_progress: Progress | None) -> dict[str, Path]:
        for attempt in (1, 2):  # presigned links are short-lived: one refresh if storage refuses them
            links = await self.client.get_results(batch_id)
            urls = {"output": links.output_file_url, "errors": links.error_file_url}
            saved: dict[str, Path] = {}
            try:
                for kind, url in urls.items():
                    if url:
                        await self.client.download(url, targets[kind], on_progress=on_progress)
                        saved[kind] = targets[kind]
                return saved
            except DownloadURLExpiredError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


def _str(path: Path | None) -> str | None:
    return str(path) if path else None


def _local_fields(record: JobRecord) -> dict[str, Any]:
    return {"tracked_locally": True, "input_path": _str(record.path), "request_id": record.request_id,
            "output_path": _str(record.output_path), "error_path": _str(record.error_path)}
