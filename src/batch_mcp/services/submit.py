"""Upload and create exactly once: the submission is stored before the API sees it, and claimed across processes."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

from batch_mcp.client import (
    BadRequestError,
    BatchAPIError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    Progress,
)
from batch_mcp.schemas import Batch, CreateBatchRequest
from batch_mcp.schemas.jobs import (
    BatchView,
    SubmitResult,
    UploadResult,
)
from batch_mcp.schemas.preflight import PreflightReport
from batch_mcp.services.core import (
    RESUBMITTABLE,
    Fingerprint,
    ServiceCore,
    limits_text,
    unchanged_since_check,
)
from batch_mcp.services.errors import (
    CreateConflicted,
    CreateNotConfirmed,
    OverBatchLimits,
)
from batch_mcp.services.workspace import Workspace
from batch_mcp.store import (
    Claim,
    Submission,
    UploadRecord,
    submission_fingerprint,
)

log = logging.getLogger(__name__)

#: API answers that mean a planned create will never succeed as sent. Not 409: to a replayed request_id it
#: may mean "still being created", so the submission stays pending and is sent again later, up to
#: ``_MAX_CONFLICTS`` such answers: after that it is never re-sent, and only new=true makes the job.
_REFUSED = (BadRequestError, NotFoundError, PermissionDeniedError)
_MAX_CONFLICTS = 3


class Submitting(ServiceCore):
    """Upload, create, submit, and re-send what a crash left unanswered."""

    async def upload(self, path: str, provider: str | None = None, endpoint: str | None = None, *,
                     on_progress: Progress | None = None, workspace: Workspace | None = None,
                     backend: str | None = None) -> UploadResult:
        report = await self._checked(path, provider, endpoint, workspace, backend)
        if report.batches > 1:
            raise OverBatchLimits(
                f"{report.path} holds {report.requests:,} requests in {report.bytes:,} bytes, over one batch's "
                f"limits ({limits_text(self.limits_for(backend))}); nothing was uploaded. Call submit_batch with "
                f"this path instead: it runs the file as {report.batches} batches in one job group.")
        return await self._upload_checked(report, on_progress, backend)

    async def _upload_checked(self, report: PreflightReport, on_progress: Progress | None,
                              backend: str | None) -> UploadResult:
        warnings = [p.message for p in report.problems if p.severity == "warning"]
        common = {"path": report.path, "bytes": report.bytes, "requests": report.requests, "sha256": report.sha256,
                  "provider": report.provider, "endpoint": report.endpoint, "warnings": warnings}
        reusable = self.store.find_reusable_upload(report.sha256, datetime.now(UTC))
        if reusable is not None:
            return UploadResult(file_id=reusable.file_id, upload_expires_at=reusable.intent_expires_at, reused=True,
                                **common)
        intent = await self.client_for(backend).upload_file(Path(report.path), on_progress=on_progress)
        unchanged_since_check(report)
        self.store.record_upload(UploadRecord(
            file_id=intent.file_id, path=Path(report.path), sha256=report.sha256, size_bytes=report.bytes,
            line_count=report.requests, intent_expires_at=intent.expires_at, completed_at=datetime.now(UTC),
        ))
        return UploadResult(file_id=intent.file_id, upload_expires_at=intent.expires_at, reused=False, **common)

    async def submit(self, path: str, provider: str | None = None, endpoint: str | None = None,
                     metadata: dict[str, str] | None = None, *, new: bool = False,
                     on_progress: Progress | None = None, workspace: Workspace | None = None,
                     parent_batch_id: str | None = None, backend: str | None = None) -> SubmitResult:
        """Validate, upload (or reuse an upload), and create the job exactly once.

        A file over the per-batch limits (but otherwise valid) becomes a job group of parts that fit.
        """
        report = await self._checked(path, provider, endpoint, workspace, backend)
        self.client_for(backend)  # before anything is split or uploaded: a backend that cannot run it costs nothing
        if report.batches > 1:
            return await self._submit_group(report, metadata, new=new, on_progress=on_progress,
                                            parent_batch_id=parent_batch_id, backend=backend)
        # a retry is the same job only as a retry of the same parent: an identical rerun of a later round is new
        content = report.sha256 if parent_batch_id is None else f"{report.sha256}:retry-of:{parent_batch_id}"
        key = Fingerprint(content, report.provider, report.endpoint, metadata)
        async with self._claimed(key) as claim:
            if not new and (existing := await self._existing(key)) is not None:
                return existing.model_copy(update={"requests": report.requests})
            upload = await self._upload_checked(report, on_progress, backend)
            try:
                result = await self._create(key, upload.file_id, path=Path(report.path),
                                            parent_batch_id=parent_batch_id, claim=claim)
            except NotFoundError:
                if not upload.reused:
                    raise
                self.store.forget_upload(upload.file_id)  # an upload the API no longer knows: send it again
                upload = await self._upload_checked(report, on_progress, backend)
                result = await self._create(key, upload.file_id, path=Path(report.path),
                                            parent_batch_id=parent_batch_id, claim=claim)
        return result.model_copy(update={"requests": report.requests, "warnings": upload.warnings})

    async def create(self, file_id: str, provider: str, endpoint: str | None = None,
                     metadata: dict[str, str] | None = None, *, new: bool = False) -> SubmitResult:
        """Create a job from an uploaded file; the same call again returns the same job."""
        upload = self.store.get_upload(file_id)  # known when this server uploaded it: same file, same job
        limits = self.limits_for(None)
        if upload and (upload.line_count > limits.request_cap or upload.size_bytes > limits.byte_cap):
            raise OverBatchLimits(
                f"{file_id} ({upload.path}) holds {upload.line_count:,} requests in {upload.size_bytes:,} bytes, "
                f"over one batch's limits ({limits_text(limits)}); no job was created. Call submit_batch with "
                "that path: it runs the file as a job group.")
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
            if batch.status in RESUBMITTABLE:
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


def _conflicted(request_id: str, conflicts: int) -> CreateConflicted:
    return CreateConflicted(f"The API answered 409 Conflict {conflicts} times to creating this batch with "
                            f"idempotency key {request_id}, so that key will not make the job",
                            status_code=409, code="conflict")
