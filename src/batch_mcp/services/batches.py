"""The batch workflow: validate, upload, submit, wait, fetch. Plain async functions over the client and store.

This is where the product's promises are kept: a file is checked before anything leaves the
machine, a submission is recorded before the API sees it (so a retry or a restart re-sends the same
idempotency key instead of creating a second job), and every job the server created stays listed.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
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
from batch_mcp.schemas import Batch, CreateBatchRequest, RequestCounts
from batch_mcp.schemas.jobs import (
    BatchList,
    BatchView,
    CostReport,
    DownloadSummary,
    JobsPage,
    PrepareResult,
    ResultLinksView,
    RetryResult,
    SubmitResult,
    UploadResult,
    WaitResult,
)
from batch_mcp.schemas.preflight import PreflightReport
from batch_mcp.services.cost import PriceTable
from batch_mcp.services.lineage import Lineage, is_group_id
from batch_mcp.services.listing import JOBS_PAGE_SIZE, decode_cursor, job_summary, recorded_jobs
from batch_mcp.services.preflight import Limits, preflight
from batch_mcp.services.prepare import PrepareError, RequestTemplate
from batch_mcp.services.prepare import prepare as prepare_requests
from batch_mcp.services.results import (
    ResultIndex,
    write_unfinished,
)
from batch_mcp.services.split import parts_folder, split_requests
from batch_mcp.services.waiting import wait_for
from batch_mcp.services.workspace import NewFile, Workspace, refuse_link, sha256_of
from batch_mcp.store import (
    Claim,
    JobRecord,
    JobStore,
    StoreUnavailable,
    Submission,
    UploadRecord,
    submission_fingerprint,
)

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
#: How often a server waiting for another process's submission looks whether it is done.
_CLAIM_POLL_S = 0.2
#: API answers that mean a planned create will never succeed as sent. Not 409: to a replayed request_id it
#: may mean "still being created", so the submission stays pending and is sent again later, up to
#: ``_MAX_CONFLICTS`` such answers: after that it is never re-sent, and only new=true makes the job.
_REFUSED = (BadRequestError, NotFoundError, PermissionDeniedError)
_MAX_CONFLICTS = 3


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


class OverBatchLimits(Exception):
    """A single-batch tool was given a file that only a job group can hold; nothing was sent."""


class FileChanged(Exception):
    """The file was modified between its check and its upload; nothing was submitted."""


class JobHasNoResults(Exception):
    """A terminal job without results (it failed before running): waiting will not help."""


class JobStillRunning(Exception):
    """The job cannot be retried yet (or its input is gone); the message says what to do."""


class ResultsExist(Exception):
    """A download would overwrite files the user already has."""


class IncompleteDownload(Exception):
    """Storage sent empty result files for a job that reports finished requests; nothing was kept."""


class CreateNotConfirmed(BatchAPIError):
    """The create call got no usable answer, so the job may or may not exist. Its request_id is stored:
    sending it again returns that job, never a second one."""

    hint = ("The submission is remembered with its idempotency key: call the same tool again with the same "
            "arguments (not new=true) to get this job, never a second one; a restarted server also resends it.")


class CreateConflicted(BatchAPIError):
    """The API keeps answering 409 to a create's idempotency key: sending it again cannot succeed."""

    hint = ("This submission is no longer sent, on calls or on restart. If list_batches shows a job made from "
            "this file, use that one; otherwise call the same tool with new=true to create it with a fresh key.")


class BatchService:
    def __init__(
        self,
        *,
        client: DigitalOceanBatchClient | None,
        store: JobStore,
        workspace: Workspace,
        limits: Limits | None = None,
        default_poll_interval_s: float = 5.0,
        prices: PriceTable | None = None,
    ) -> None:
        self._client = client
        self.store = store
        self.workspace = workspace
        self.limits = limits or Limits()
        self.default_poll_interval_s = default_poll_interval_s
        self.prices = prices or PriceTable.load()
        self.lineage = Lineage(store)
        self.status_listeners: list[StatusListener] = []
        #: One lock per submission fingerprint: identical calls arriving together find one job, not make two.
        self._submitting: dict[str, anyio.Lock] = {}

    @asynccontextmanager
    async def _claimed(self, key: Fingerprint) -> AsyncIterator[Claim]:
        """Be the only one making this submission: among this server's tasks (a lock), and among every
        server on the state folder (a claim in the store, renewed while held). A waiter then finds the job
        the holder made, or takes over once the holder is gone."""
        fingerprint = submission_fingerprint(*key)
        async with self._submitting.setdefault(fingerprint, anyio.Lock()):
            while (claim := self.store.claim(fingerprint)) is None:
                await anyio.sleep(_CLAIM_POLL_S)
            try:
                with self.store.keeping(claim):
                    yield claim
            finally:
                try:
                    self.store.release_claim(claim)
                except StoreUnavailable as exc:  # the outcome stands; the lease expires on its own
                    log.warning("could not release a submission claim: %s", exc)

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
        checked = real.stat().st_mtime_ns  # before reading: a change made while checking is noticed too
        report = await anyio.to_thread.run_sync(lambda: preflight(real, provider, endpoint, self.limits))
        return report.model_copy(update={"mtime_ns": checked})

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
        if report.batches > 1:
            raise OverBatchLimits(
                f"{report.path} holds {report.requests:,} requests in {report.bytes:,} bytes, over one batch's "
                f"limits ({self.limits.max_requests:,} requests, {self.limits.max_bytes:,} bytes); nothing was "
                f"uploaded. Call submit_batch with this path instead: it runs the file as {report.batches} "
                "batches in one job group.")
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
        _unchanged_since_check(report)
        self.store.record_upload(UploadRecord(
            file_id=intent.file_id, path=Path(report.path), sha256=report.sha256, size_bytes=report.bytes,
            line_count=report.requests, intent_expires_at=intent.expires_at, completed_at=datetime.now(UTC),
        ))
        return UploadResult(file_id=intent.file_id, upload_expires_at=intent.expires_at, reused=False, **common)

    async def submit(self, path: str, provider: str | None = None, endpoint: str | None = None,
                     metadata: dict[str, str] | None = None, *, new: bool = False,
                     on_progress: Progress | None = None, workspace: Workspace | None = None,
                     parent_batch_id: str | None = None) -> SubmitResult:
        """Validate, upload (or reuse an upload), and create the job exactly once.

        A file over the per-batch limits (but otherwise valid) becomes a job group of parts that fit.
        """
        report = await self._checked(path, provider, endpoint, workspace)
        if report.batches > 1:
            return await self._submit_group(report, metadata, new=new, on_progress=on_progress,
                                            parent_batch_id=parent_batch_id)
        # a retry is the same job only as a retry of the same parent: an identical rerun of a later round is new
        content = report.sha256 if parent_batch_id is None else f"{report.sha256}:retry-of:{parent_batch_id}"
        key = Fingerprint(content, report.provider, report.endpoint, metadata)
        async with self._claimed(key) as claim:
            if not new and (existing := await self._existing(key)) is not None:
                return existing.model_copy(update={"requests": report.requests})
            upload = await self._upload_checked(report, on_progress)
            try:
                result = await self._create(key, upload.file_id, path=Path(report.path),
                                            parent_batch_id=parent_batch_id, claim=claim)
            except NotFoundError:
                if not upload.reused:
                    raise
                self.store.forget_upload(upload.file_id)  # an upload the API no longer knows: send it again
                upload = await self._upload_checked(report, on_progress)
                result = await self._create(key, upload.file_id, path=Path(report.path),
                                            parent_batch_id=parent_batch_id, claim=claim)
        return result.model_copy(update={"requests": report.requests, "warnings": upload.warnings})

    async def _submit_group(self, report: PreflightReport, metadata: dict[str, str] | None, *, new: bool,
                            on_progress: Progress | None, parent_batch_id: str | None = None) -> SubmitResult:
        """Split a valid file over one batch's limits into parts that fit and submit each, as one job group."""
        path = Path(report.path)
        content = report.sha256 if parent_batch_id is None else f"{report.sha256}:retry-of:{parent_batch_id}"
        key = Fingerprint(content, report.provider, report.endpoint, metadata)
        fingerprint = submission_fingerprint(*key)
        async with self._claimed(key) as claim:
            group = None if new else self.store.find_group_by_fingerprint(fingerprint)
            if group is not None and (await self._group_view(group.group_id)).status in _RESUBMITTABLE:
                group = None
            # beside the input, and checked like any output: a planted link must not send the parts elsewhere
            parts_name = parts_folder(path, report.sha256, self.limits.max_requests, self.limits.max_bytes)
            folder = Workspace([path.parent]).output_dir(parts_name, default=path.parent)
            parts = await anyio.to_thread.run_sync(
                lambda: split_requests(path, folder, self.limits.max_requests, self.limits.max_bytes))
            _unchanged_since_check(report)
            reused = group is not None
            group = group or self.store.create_group(path, report.sha256, fingerprint, len(parts), parent_batch_id,
                                                     claim)
            done = {s.path: s for s in self.store.group_submissions(group.group_id)}
            for part in parts:
                submission = done.get(part)
                if submission is not None and submission.batch_id is None:
                    await self._resend(submission)
                elif submission is None:
                    part_report = await self._checked(str(part), report.provider, report.endpoint,
                                                      Workspace([folder]))
                    upload = await self._upload_checked(part_report, on_progress)
                    await self._create(Fingerprint(part_report.sha256, report.provider, report.endpoint, metadata),
                                       upload.file_id, path=part, group_id=group.group_id, claim=claim)
            view = await self._group_view(group.group_id)
        return SubmitResult(batch=view, reused_existing_job=reused, requests=report.requests,
                            warnings=[f"The file exceeds one batch's limits ({self.limits.max_requests:,} requests, "
                                      f"{self.limits.max_bytes:,} bytes), so it runs as {len(parts)} batches in "
                                      f"job group {group.group_id}; use that id with every batch tool."],
                            next_step="Call wait_for_batch with the group id.")

    async def create(self, file_id: str, provider: str, endpoint: str | None = None,
                     metadata: dict[str, str] | None = None, *, new: bool = False) -> SubmitResult:
        """Create a job from an uploaded file; the same call again returns the same job."""
        upload = self.store.get_upload(file_id)  # known when this server uploaded it: same file, same job
        if upload and (upload.line_count > self.limits.max_requests or upload.size_bytes > self.limits.max_bytes):
            raise OverBatchLimits(
                f"{file_id} ({upload.path}) holds {upload.line_count:,} requests in {upload.size_bytes:,} bytes, "
                f"over one batch's limits ({self.limits.max_requests:,} requests, {self.limits.max_bytes:,} "
                "bytes); no job was created. Call submit_batch with that path: it runs the file as a job group.")
        content = upload.sha256 if upload else f"file_id:{file_id}"
        key = Fingerprint(content, provider, endpoint, metadata)
        async with self._claimed(key) as claim:
            if not new and (existing := await self._existing(key)) is not None:
                return existing
            return await self._create(key, file_id, path=upload.path if upload else None, claim=claim)

    async def _existing(self, key: Fingerprint) -> SubmitResult | None:
        """The job an identical earlier submission made (re-sent if the API never answered)."""
        submission = self.store.find_submission_by_fingerprint(submission_fingerprint(*key))
        if submission is None:
            return None
        if submission.batch_id is None:  # planned, but the answer was lost: same request_id, same job
            try:
                batch = await self._resend(submission)
            except NotFoundError:  # its file is gone: the submission was forgotten, submit afresh
                return None
        else:
            try:
                batch = await self.get(submission.batch_id)
            except NotFoundError:  # remembered from another account or endpoint: not a job here
                return None
            if batch.status in _RESUBMITTABLE:
                return None
        return SubmitResult(batch=BatchView.from_batch(batch), file_id=submission.file_id,
                            request_id=submission.request_id, reused_existing_job=True)

    async def _create(self, key: Fingerprint, file_id: str, *, path: Path | None, claim: Claim,
                      group_id: str | None = None, parent_batch_id: str | None = None) -> SubmitResult:
        submission = self.store.plan_submission(sha256=key.content, path=path, file_id=file_id,
                                                provider=key.provider, endpoint=key.endpoint, metadata=key.metadata,
                                                group_id=group_id, parent_batch_id=parent_batch_id, claim=claim)
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
        try:
            batch = await self.client.create_batch(request)
        except _REFUSED:
            raise
        except ConflictError as exc:
            conflicts = self.store.count_conflict(request_id)
            if conflicts >= _MAX_CONFLICTS:
                raise _conflicted(request_id, conflicts) from exc
            raise CreateNotConfirmed(f"The batch was not confirmed: the API answered 409 Conflict ({conflicts} "
                                     f"of {_MAX_CONFLICTS} allowed), which may mean it is still being created: "
                                     f"{exc}") from exc
        except BatchAPIError as exc:
            raise CreateNotConfirmed(f"The batch was not confirmed, it may or may not exist yet: {exc}") from exc
        self.store.attach_batch(request_id, batch)
        await self._seen(batch)
        return batch

    async def _resend(self, submission: Submission) -> Batch:
        """Send a planned create again with its stored request_id: the API answers with the one job."""
        if submission.conflicts >= _MAX_CONFLICTS:
            raise _conflicted(submission.request_id, submission.conflicts)
        try:
            return await self._send_create(submission.request_id, submission.file_id, submission.provider,
                                           submission.endpoint, submission.metadata)
        except _REFUSED:
            self.store.discard_submission(submission.request_id)  # refused for good: never re-send it
            raise

    async def resume_pending(self) -> list[Batch]:
        """After a crash: re-send every create call whose answer was never recorded (same request_id)."""
        resumed = []
        for submission in self.store.pending_submissions():
            if submission.conflicts >= _MAX_CONFLICTS:
                continue  # only the agent can resolve it (new=true); its next call says so
            try:
                resumed.append(await self._resend(submission))
            except _REFUSED as exc:
                log.warning("submission %s was refused (%s); forgotten", submission.request_id, exc)
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
        if previous is not None and previous.last_seen == batch:
            return  # a poll that changed nothing costs no durable write
        self.store.upsert_batch(batch)
        if previous is None or previous.status != batch.status:
            for listener in self.status_listeners:
                await listener(batch)

    async def view(self, job_id: str) -> BatchView:
        """A job (or job group) as agents see it, with its actual cost once results were downloaded."""
        if is_group_id(job_id):
            return await self._group_view(job_id)
        view = BatchView.from_batch(await self.get(job_id))
        record = self.store.get_job(job_id)
        if record is None:
            return view
        cost = self._actual_cost(record.usage, merged=record.parent_batch_id is not None) if record.usage else None
        return view.model_copy(update={"cost": cost, "parent_batch_id": record.parent_batch_id})

    def _actual_cost(self, usage: dict[str, list[int]], *, merged: bool) -> CostReport:
        report = self.prices.report({m: (u[0], u[1], u[2]) for m, u in usage.items()}, estimated=False)
        if not merged:
            return report
        return report.model_copy(update={"note": report.note + " It covers every request in the merged table (all "
                                         "parts, and the jobs this one retries): do not add it to theirs."})

    async def _group_view(self, group_id: str) -> BatchView:
        group = self.store.get_group(group_id)
        if group is None:
            raise NotFoundError(f"No job group {group_id!r} is known to this server", status_code=404,
                                code="not_found")
        parts = []
        for submission in self.store.group_submissions(group_id):
            if submission.batch_id is None:
                continue
            part = await self.get(submission.batch_id)
            upload = self.store.get_upload(submission.file_id)
            if part.status == "failed" and not part.request_counts.total and upload is not None:
                # refused before counting: its requests all failed, and the group's total must include them
                lines = upload.line_count
                part = part.model_copy(update={"request_counts": RequestCounts(total=lines, failed=lines)})
            parts.append(part)
        view = BatchView.from_group(group_id, parts, group.parts)
        return view.model_copy(update={"parent_batch_id": group.parent_batch_id})

    async def wait(self, batch_id: str, timeout_s: float, poll_interval_s: float | None = None,
                   on_progress: Progress | None = None) -> WaitResult:
        """Poll until a terminal status or the (hard) deadline, backing off while nothing changes."""
        return await wait_for(batch_id, lambda: self.view(batch_id), lambda: self._recorded_view(batch_id),
                              timeout_s=timeout_s, interval_s=poll_interval_s or self.default_poll_interval_s,
                              on_progress=on_progress)

    def _recorded_view(self, job_id: str) -> BatchView | None:
        """A job (or group) as last recorded, for when the API gives no answer in time."""
        if not is_group_id(job_id):
            record = self.store.get_job(job_id)
            return BatchView.from_batch(record.last_seen) if record else None
        group = self.store.get_group(job_id)
        if group is None:
            return None
        return BatchView.from_group(job_id, self._recorded_parts(job_id), group.parts)

    def _recorded_parts(self, group_id: str) -> list[Batch]:
        return [record.last_seen for s in self.store.group_submissions(group_id)
                if s.batch_id and (record := self.store.get_job(s.batch_id))]

    async def list(self, status: str | None = None, limit: int = 20, cursor: str | None = None) -> BatchList:
        page = await self.client.list_batches(status=status, limit=limit, after=cursor)
        summaries = []
        for batch in page.data:
            record = self.store.get_job(batch.batch_id)
            if record is not None:
                await self._seen(batch)
            summaries.append(job_summary(BatchView.from_batch(batch), record))
        return BatchList(batches=summaries, next_cursor=page.next_cursor, has_more=page.has_more)

    async def cancel(self, batch_id: str) -> BatchView:
        """Cancel a job, or every running part of a job group (a part that cannot be cancelled is skipped)."""
        if not is_group_id(batch_id):
            await self.client.cancel_batch(batch_id)
            return BatchView.from_batch(await self.get(batch_id))  # some answers carry only id and status
        view = await self._group_view(batch_id)
        refusals: list[ConflictError] = []
        for part in view.parts or []:
            try:
                await self.client.cancel_batch(part)
            except ConflictError as exc:
                refusals.append(exc)
        if refusals and len(refusals) == len(view.parts or []):
            raise refusals[0]
        return await self._group_view(batch_id)

    async def jobs_page(self, cursor: str | None = None, limit: int = JOBS_PAGE_SIZE) -> JobsPage:
        """A page of the jobs (and job groups) this server recorded, newest first; older ones follow ``next``.

        The first page's statuses are refreshed from the API's newest jobs; later pages show the last status
        recorded (``get_batch`` has the live one).
        """
        before = decode_cursor(cursor) if cursor else None
        note = "Statuses on this page are as last recorded; get_batch gives a job's live status." if before else None
        if before is None:
            try:
                await self.list(limit=limit)  # records the live status of the tracked jobs among the newest
            except (NotConfigured, BatchAPIError) as exc:
                note = f"Live status unavailable, showing the last recorded status: {exc}"
        return recorded_jobs(self.store, before, limit).model_copy(update={"note": note})

    async def job_detail(self, batch_id: str) -> dict[str, Any]:
        """One job: live status when the API answers, plus what the store recorded."""
        if is_group_id(batch_id):
            return (await self._group_view(batch_id)).model_dump(mode="json")
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
        if is_group_id(batch_id):
            view = await self._group_view(batch_id)
            parts = [await self.result_links(part) for part in view.parts or [] if part not in view.failed_parts]
            return ResultLinksView(batch_id=batch_id, parts=parts,
                                   expires_at=min((p.expires_at for p in parts if p.expires_at), default=None))
        try:
            links = await self.client.get_results(batch_id)
        except ResultsNotReadyError:
            view = await self.view(batch_id)
            if view.terminal and not view.results_ready:
                raise JobHasNoResults(f"Job {batch_id} is {view.status} and will never have results. "
                                      f"{view.next_step}") from None
            raise
        return ResultLinksView(batch_id=batch_id, output_file_url=links.output_file_url,
                               error_file_url=links.error_file_url, expires_at=links.expires_at)

    async def download(self, batch_id: str, dest_dir: str | None = None, *, overwrite: bool = False,
                       on_progress: Progress | None = None, workspace: Workspace | None = None) -> DownloadSummary:
        """Stream the result files into an allowed folder, then merge and join them into one results table.

        For a retry, the table covers the whole original input and prefers the newest success; for a
        group, it covers every part.
        """
        view = await self.view(batch_id)
        if not view.results_ready:
            raise ResultsNotReadyError(
                f"Job {batch_id} is {view.status}; results exist once it is completed, cancelled or expired. "
                "Call wait_for_batch first", code="results_not_ready")
        workspace = workspace or self.workspace
        folder = workspace.output_dir(dest_dir, default=Path("batch-results"))  # in the first allowed folder
        stem = _file_stem(batch_id)
        table_paths = (folder / f"{stem}.results.csv", folder / f"{stem}.results.jsonl")
        members = [part for part in view.parts if part not in view.failed_parts] if view.parts else [batch_id]
        targets = {member: {"output": folder / f"{_file_stem(member)}.output.jsonl",
                            "errors": folder / f"{_file_stem(member)}.errors.jsonl"} for member in members}
        wanted = [*table_paths, *(p for t in targets.values() for p in t.values())]
        for path in wanted:
            refuse_link(path)  # before any is written: a link is never written through nor replaced
        present = [p for p in wanted if p.exists()]
        if present and not overwrite:
            raise ResultsExist(f"{', '.join(map(str, present))} already exist(s); pass overwrite=true to replace, "
                               "or another dest_dir.")
        saved: dict[str, dict[str, Path]] = {}
        for member in members:
            saved[member] = await self._download_files(member, targets[member], overwrite, on_progress)
            self.store.record_download(member, saved[member].get("output"), saved[member].get("errors"))
        warnings: list[str] = []
        table = await anyio.to_thread.run_sync(
            lambda: self.lineage.results_table(batch_id, *table_paths, warnings, overwrite=overwrite))
        usage = {model: list(counts) for model, counts in table.usage_by_model.items()}
        for member in members:
            self.store.record_download(member, saved[member].get("output"), saved[member].get("errors"),
                                       table_paths[0], usage if member == batch_id else None)
        cost = self._actual_cost(usage, merged=bool(view.parts or view.parent_batch_id))
        next_step = (f"{table.failed} request(s) failed and {table.missing} have no result: call "
                     "retry_failed_requests to run just those again." if table.failed or table.missing else
                     f"All requests succeeded: the merged table is {table_paths[0]}.")
        outputs = [str(p) for files in saved.values() for kind, p in files.items() if kind == "output"]
        errors = [str(p) for files in saved.values() for kind, p in files.items() if kind == "errors"]
        return DownloadSummary(
            batch_id=batch_id, status=view.status, output_path=outputs[0] if outputs else None,
            error_path=errors[0] if errors else None, table_csv_path=str(table_paths[0]),
            table_jsonl_path=str(table_paths[1]), part_files=outputs + errors if view.parts else [],
            succeeded=table.succeeded, failed=table.failed, missing=table.missing,
            error_codes=dict(table.error_codes.most_common()), usage=table.usage, cost=cost,
            preview=table.preview, warnings=warnings, next_step=next_step,
        )

    async def retry_failed(self, batch_id: str, *, workspace: Workspace | None = None,
                           on_progress: Progress | None = None) -> RetryResult:
        """Resubmit the original requests that have no successful result yet, as a job linked to its parent.

        Called on the newest retry each time, it converges: every round only reruns what is still missing.
        """
        async with self._submitting.setdefault(f"retry:{batch_id}", anyio.Lock()):
            return await self._retry_failed(batch_id, workspace, on_progress)

    async def _retry_failed(self, batch_id: str, workspace: Workspace | None,
                            on_progress: Progress | None) -> RetryResult:
        view = await self.view(batch_id)
        if not view.terminal:
            raise JobStillRunning(f"Job {batch_id} is still {view.status}; wait for it to finish "
                                  "(wait_for_batch), then retry its failures.")
        members = [p for p in view.parts if p not in view.failed_parts] if view.parts else [batch_id]
        if view.results_ready and any(self._needs_download(member) for member in members):
            await self.download(batch_id, overwrite=True, workspace=workspace)
        source, problem = await anyio.to_thread.run_sync(lambda: self.lineage.unchanged_root_input(batch_id))
        if source is None:
            raise JobStillRunning(f"{problem} Its failed requests cannot be rebuilt safely; restore the file, or "
                                  "submit a corrected file instead.")
        target = Workspace([source.parent]).output_file(
            source.with_name(f"{source.stem}.retry-{_file_stem(batch_id)[:40]}.jsonl"))
        index = ResultIndex(self.lineage.result_files(batch_id))
        failed, missing = await anyio.to_thread.run_sync(lambda: write_unfinished(source, index, target))
        if failed + missing == 0:
            return RetryResult(retried=0, failed=0, missing=0,
                               next_step="Nothing to retry: every request has a successful result.")
        record = self.store.get_job((view.parts or [batch_id])[0])
        # not new=True: asking twice for the same retry returns the job the first call made
        submitted = await self.submit(str(target), view.provider, view.endpoint,
                                      record.metadata if record else None,
                                      workspace=Workspace([target.parent]), on_progress=on_progress,
                                      parent_batch_id=batch_id)
        return RetryResult(retried=failed + missing, failed=failed, missing=missing, retry_file=str(target),
                           submitted=submitted,
                           next_step="Call wait_for_batch on the new job, then download_batch_results on it: its "
                                     "table merges the earlier results, preferring the newest success.")

    def _needs_download(self, batch_id: str) -> bool:
        record = self.store.get_job(batch_id)
        return record is not None and record.output_path is None and record.error_path is None

    async def prepare(self, source: str, template: RequestTemplate, output: str | None = None, *,
                      overwrite: bool = False, workspace: Workspace | None = None) -> PrepareResult:
        """Render records into a request file beside the source (or at ``output``), then validate it."""
        workspace = workspace or self.workspace
        src = workspace.input_file(source)
        target = workspace.output_file(output or src.with_name(f"{src.stem}.batch.jsonl"))
        if target == src:
            raise PrepareError("The output would replace the source file; pass another output path.")
        prepared = await anyio.to_thread.run_sync(lambda: prepare_requests(src, target, template,
                                                                           overwrite=overwrite))
        source_sha = await anyio.to_thread.run_sync(lambda: sha256_of(src))
        self.store.record_prepared(target, src, prepared.source_format, template.id_column, source_sha)
        endpoint = template.endpoint if template.provider == "openai" else None
        report = await self.validate(str(target), template.provider, endpoint, workspace)
        problems = [f"line {p.line}: {p.message}" if p.line else p.message for p in report.problems]
        return PrepareResult(
            path=str(target), source=str(src), records=prepared.records, columns=prepared.columns,
            skipped_blank=prepared.skipped_blank, example_prompt=prepared.example_prompt,
            example_line=prepared.example_line, valid=report.valid, problems=problems + prepared.warnings,
            estimated_cost=self.estimate(report),
            next_step=(f"Check example_prompt, then call submit_batch with path={target}." if report.valid else
                       "Fix the template or the records so the problems go away, then prepare again."),
        )

    async def estimate_cost(self, path: str, provider: str | None = None, endpoint: str | None = None,
                            workspace: Workspace | None = None) -> CostReport:
        report = await self.validate(path, provider, endpoint, workspace)
        return self.estimate(report)

    def estimate(self, report: PreflightReport) -> CostReport:
        """Before submission: estimated input tokens, and max output tokens as the ceiling, per model."""
        usage = {model: (u.requests, u.input_tokens, u.max_output_tokens) for model, u in report.model_usage.items()}
        cost = self.prices.report(usage, estimated=True)
        caveats = [cost.note]
        if not report.valid:
            caveats.append(f"The file has {report.error_count:,} error(s), and requests that could not be read are "
                           "not counted: fix them (validate_batch_file lists them) for a full estimate.")
        if report.batches > 1:
            caveats.append(f"It covers all {report.batches} batches the file runs as (one job group).")
        return cost.model_copy(update={"note": " ".join(caveats)})

    async def _download_files(self, batch_id: str, targets: dict[str, Path], overwrite: bool,
                              on_progress: Progress | None) -> dict[str, Path]:
        for attempt in (1, 2):  # presigned links are short-lived: one refresh if storage refuses them
            links = await self.client.get_results(batch_id)
            urls = {"output": links.output_file_url, "errors": links.error_file_url}
            saved: dict[str, Path] = {}
            try:
                for kind, url in urls.items():
                    if url:
                        with NewFile(targets[kind], overwrite=overwrite) as new:
                            await self.client.download(url, new.out, on_progress=on_progress)
                        saved[kind] = targets[kind]
            except DownloadURLExpiredError:
                if attempt == 2:
                    raise
                continue
            self._check_complete(batch_id, saved)
            return saved
        raise AssertionError("unreachable")

    def _check_complete(self, batch_id: str, saved: dict[str, Path]) -> None:
        """Refuse result files that hold nothing for a job that reports finished requests: summarised, they
        would read as "no results, retry everything", and following that pays for every request again."""
        record = self.store.get_job(batch_id)
        finished = record.request_counts.completed + record.request_counts.failed if record else 0
        if finished and all(path.stat().st_size == 0 for path in saved.values()):
            for path in saved.values():
                path.unlink()  # written just now by this download: an empty file must not pass for results
            raise IncompleteDownload(
                f"The download of job {batch_id} looks incomplete: the job reports {finished} finished "
                "request(s), but storage sent empty result files, so nothing was kept. Download again in a few "
                "minutes (get_batch shows the job's counts); do not retry its requests: they already ran, and a "
                "retry would pay for them again.")


def _conflicted(request_id: str, conflicts: int) -> CreateConflicted:
    return CreateConflicted(f"The API answered 409 Conflict {conflicts} times to creating this batch with "
                            f"idempotency key {request_id}, so that key will not make the job",
                            status_code=409, code="conflict")


def _unchanged_since_check(report: PreflightReport) -> None:
    """What was uploaded (or split into parts) is the file as checked, not a later edit of it."""
    now = Path(report.path).stat()
    if report.mtime_ns is not None and (now.st_mtime_ns, now.st_size) != (report.mtime_ns, report.bytes):
        raise FileChanged(f"{report.path} changed after it was checked, so what was sent may not be what was "
                          "validated; nothing was submitted. Call the tool again to check and send its "
                          "current content.")


def _file_stem(job_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", job_id)


def _str(path: Path | None) -> str | None:
    return str(path) if path else None


def _local_fields(record: JobRecord) -> dict[str, Any]:
    return {"tracked_locally": True, "input_path": _str(record.path), "request_id": record.request_id,
            "output_path": _str(record.output_path), "error_path": _str(record.error_path)}
