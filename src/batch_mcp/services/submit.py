"""Upload and create exactly once: the submission is stored before the API sees it, and claimed across processes.

The stored submission's id is the create's client token: DigitalOcean replays it as its idempotency key,
OpenAI-style APIs carry it in the job's metadata, and after a lost answer :mod:`.once` finds the job by it
before anything is created again.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio

from batch_mcp.backends.base import (
    Backend,
    ConflictError,
    CreateNotConfirmed,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
)
from batch_mcp.domain import CreateSpec, Job, Progress, Ref
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
    FileChanged,
    OverBatchLimits,
)
from batch_mcp.services.once import OthersJobs, create_once, recover
from batch_mcp.services.workspace import Workspace, sha256_of
from batch_mcp.store import (
    Claim,
    StoreUnavailable,
    Submission,
    UploadRecord,
)

log = logging.getLogger(__name__)

#: API answers that mean a planned create will never succeed as sent. Not 409: to a replayed request_id it
#: may mean "still being created", so the submission stays pending and is sent again later, up to
#: ``_MAX_CONFLICTS`` such answers: after that it is never re-sent, and only new=true makes the job.
_REFUSED = (InvalidRequestError, NotFoundError, PermissionDeniedError)
_MAX_CONFLICTS = 3
#: How far back a lost create's recovery rules out other submissions' jobs: far beyond any clock skew.
ATTRIBUTION_HORIZON = timedelta(days=1)


class Submitting(ServiceCore):
    """Upload, create, submit, and look for what a crash left unanswered."""

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
        name = self.backend_name(backend)
        warnings = [p.message for p in report.problems if p.severity == "warning"]
        common = {"path": report.path, "bytes": report.bytes, "requests": report.requests, "sha256": report.sha256,
                  "provider": report.provider, "endpoint": report.endpoint, "warnings": warnings}
        reusable = self.store.find_reusable_upload(report.sha256, datetime.now(UTC), backend=name)
        if reusable is not None:
            return UploadResult(file_id=str(Ref(name, reusable.file_id)), upload_expires_at=reusable.intent_expires_at,
                                reused=True, **common)
        staged = await self.backend_for(name).upload(Path(report.path), report.provider, on_progress=on_progress)
        unchanged_since_check(report)
        self.store.record_upload(UploadRecord(
            backend=name, file_id=staged.ref, path=Path(report.path), sha256=report.sha256, size_bytes=report.bytes,
            line_count=report.requests, intent_expires_at=staged.expires_at, completed_at=datetime.now(UTC),
        ))
        return UploadResult(file_id=str(Ref(name, staged.ref)), upload_expires_at=staged.expires_at, reused=False,
                            **common)

    async def submit(self, path: str, provider: str | None = None, endpoint: str | None = None,
                     metadata: dict[str, str] | None = None, *, new: bool = False,
                     on_progress: Progress | None = None, workspace: Workspace | None = None,
                     parent_batch_id: str | None = None, backend: str | None = None,
                     completion_window: str = "24h") -> SubmitResult:
        """Validate, upload (or reuse an upload), and create the job exactly once.

        A file over the per-batch limits (but otherwise valid) becomes a job group of parts that fit.
        """
        report = await self._checked(path, provider, endpoint, workspace, backend)
        name = self.backend_name(backend)
        self.backend_for(name)  # before anything is split or uploaded: a backend that cannot run it costs nothing
        if report.batches > 1:
            return await self._submit_group(report, metadata, new=new, on_progress=on_progress,
                                            parent_batch_id=parent_batch_id, backend=name, window=completion_window)
        # a retry is the same job only as a retry of the same parent: an identical rerun of a later round is new
        content = report.sha256 if parent_batch_id is None else f"{report.sha256}:retry-of:{parent_batch_id}"
        key = Fingerprint(content, report.provider, report.endpoint, metadata, name, completion_window)
        async with self._claimed(key) as claim:
            if not new and (existing := await self._existing(key)) is not None:
                return existing.model_copy(update={"requests": report.requests})
            upload = await self._upload_checked(report, on_progress, name)
            try:
                result = await self._create(key, upload.file_id, path=Path(report.path),
                                            parent_batch_id=parent_batch_id, claim=claim)
            except NotFoundError:
                if not upload.reused:
                    raise
                self.store.forget_upload(upload.file_id)  # an upload the API no longer knows: send it again
                upload = await self._upload_checked(report, on_progress, name)
                result = await self._create(key, upload.file_id, path=Path(report.path),
                                            parent_batch_id=parent_batch_id, claim=claim)
        return result.model_copy(update={"requests": report.requests, "warnings": upload.warnings})

    async def create(self, file_id: str, provider: str, endpoint: str | None = None,
                     metadata: dict[str, str] | None = None, *, new: bool = False,
                     completion_window: str = "24h") -> SubmitResult:
        """Create a job from an uploaded file; the same call again returns the same job."""
        upload = self.store.get_upload(file_id)  # known when this server uploaded it: same file, same job
        ref = Ref.parse(file_id)
        name = self.backend_name(ref.backend or (upload.backend if upload else None))
        limits = self.limits_for(name)
        if upload and (upload.line_count > limits.request_cap or upload.size_bytes > limits.byte_cap):
            raise OverBatchLimits(
                f"{file_id} ({upload.path}) holds {upload.line_count:,} requests in {upload.size_bytes:,} bytes, "
                f"over one batch's limits ({limits_text(limits)}); no job was created. Call submit_batch with "
                "that path: it runs the file as a job group.")
        content = upload.sha256 if upload else f"file_id:{ref.native}"
        key = Fingerprint(content, provider, endpoint, metadata, name, completion_window)
        async with self._claimed(key) as claim:
            if not new and (existing := await self._existing(key)) is not None:
                return existing
            return await self._create(key, str(Ref(name, ref.native)), path=upload.path if upload else None,
                                      claim=claim)

    async def _existing(self, key: Fingerprint) -> SubmitResult | None:
        """The job an identical earlier submission made (looked for again if the API never answered)."""
        submission = self.store.find_submission_by_fingerprint(key.digest)
        if submission is None:
            return None
        if submission.batch_id is None:  # planned, but the answer was lost: find it before making another
            try:
                job = await self._resend(submission)
            except NotFoundError:  # its file is gone: the submission was forgotten, submit afresh
                return None
        else:
            try:
                job = await self.get(str(Ref(submission.backend, submission.batch_id)))
            except NotFoundError:  # remembered from another account or endpoint: not a job here
                return None
            if job.status in RESUBMITTABLE:
                return None
        return SubmitResult(batch=BatchView.from_job(job), file_id=str(Ref(submission.backend, submission.file_id)),
                            request_id=submission.request_id, reused_existing_job=True)

    async def _create(self, key: Fingerprint, file_id: str, *, path: Path | None, claim: Claim,
                      group_id: str | None = None, parent_batch_id: str | None = None) -> SubmitResult:
        """Plan the submission (stored first), then create its job once; ``file_id`` is namespaced."""
        native = Ref.parse(file_id).native
        submission = self.store.plan_submission(sha256=key.content, path=path, file_id=native, provider=key.provider,
                                                endpoint=key.endpoint, metadata=key.metadata, group_id=group_id,
                                                parent_batch_id=parent_batch_id, claim=claim, backend=key.backend,
                                                completion_window=key.window)
        job = await self._send(submission, create_once)
        return SubmitResult(batch=BatchView.from_job(job), file_id=str(Ref(key.backend, native)),
                            request_id=submission.request_id, reused_existing_job=False)

    async def _resend(self, submission: Submission) -> Job:
        """A planned create whose answer was lost: find its job (DigitalOcean: replay its request_id), and
        create it only once the backend agrees it was never made."""
        if submission.conflicts >= _MAX_CONFLICTS:
            raise _conflicted(submission.request_id, submission.conflicts)
        return await self._send(submission, _recover_or_create)

    async def _send(self, submission: Submission, send: _Sender) -> Job:
        """Send a planned create the way ``send`` does, and record what came of it."""
        backend = self.backend_for(submission.backend)
        if backend.capabilities.upload == "inline":
            await self._still_as_checked(submission)
        spec = CreateSpec(input_ref=submission.file_id, line_format=submission.provider, endpoint=submission.endpoint,
                          completion_window=submission.completion_window, metadata=submission.metadata or {},
                          client_token=submission.request_id, planned_at=submission.created_at)
        try:
            job = await send(backend, spec, lambda: self._made_by_others(submission))
        except _REFUSED:
            self.store.discard_submission(submission.request_id)  # refused for good: never re-send it
            raise
        except ConflictError as exc:
            conflicts = self.store.count_conflict(submission.request_id)
            if conflicts >= _MAX_CONFLICTS:
                raise _conflicted(submission.request_id, conflicts) from exc
            raise CreateNotConfirmed(f"The batch was not confirmed: the API answered 409 Conflict ({conflicts} of "
                                     f"{_MAX_CONFLICTS} allowed), which may mean it is still being created: {exc}",
                                     client_token=submission.request_id, backend=backend.name,
                                     status_code=409, code="conflict") from exc
        self.store.attach_batch(submission.request_id, job)
        await self._seen(job)
        return job

    def _made_by_others(self, submission: Submission) -> frozenset[str]:
        """Jobs on the submission's backend that other submissions here made, planned within a day of it: a
        backend that matches a lost create by its shape alone must not take one of them for this one's."""
        return self.store.jobs_of_other_submissions(submission.backend, submission.request_id,
                                                    submission.created_at - ATTRIBUTION_HORIZON)

    async def _still_as_checked(self, submission: Submission) -> None:
        """An inline backend reads the input at create (and again to recover a lost answer by its request
        count): the file must still be the one that was checked, or the job sent would not be that one."""
        upload = self.store.get_upload(str(Ref(submission.backend, submission.file_id)))
        path = Path(submission.file_id)
        now = await anyio.to_thread.run_sync(lambda: sha256_of(path) if path.is_file() else None)
        if upload is not None and now != upload.sha256:
            raise FileChanged(f"{path} changed (or went) after it was checked, and {submission.backend} reads it "
                              "when the job is created, so nothing was sent. Restore it, or submit it again to "
                              "check and send its current content.")

    async def resume_pending(self) -> list[Job]:
        """After a crash: settle every create whose answer was never recorded, on every configured backend."""
        resumed = []
        for submission in self.store.pending_submissions():
            if submission.conflicts >= _MAX_CONFLICTS or submission.backend not in self.registry.names:
                continue  # only the agent can resolve it (new=true), or its backend is not configured here
            try:
                if (job := await self._resend_if_free(submission)) is not None:
                    resumed.append(job)
            except _REFUSED as exc:
                log.warning("submission %s was refused (%s); forgotten", submission.request_id, exc)
            except Exception as exc:  # one bad record must not stop the others; it stays pending
                log.warning("could not resume submission %s: %s", submission.request_id, exc)
        return resumed

    async def _resend_if_free(self, submission: Submission) -> Job | None:
        """Resend a pending create only under its claim: a server (or replica) still making that job holds it,
        and a resend beside it would make a second job on a backend that matches lost creates by shape. Its
        holder settles it; if the holder dies, the next identical submit (or the next start) takes over."""
        claim = self.store.claim(submission.fingerprint, backend=submission.backend)
        if claim is None:
            log.debug("submission %s is being made by another server; left to it", submission.request_id)
            return None
        try:
            with self.store.keeping(claim):
                pending = self.store.pending_submissions(submission.backend)
                if all(other.request_id != submission.request_id for other in pending):
                    return None  # answered (or refused) while we waited for the claim
                return await self._resend(submission)
        finally:
            try:
                self.store.release_claim(claim)
            except StoreUnavailable as exc:
                log.warning("could not release a submission claim: %s", exc)


_Sender = Callable[[Backend, CreateSpec, OthersJobs], Awaitable[Job]]


async def _recover_or_create(backend: Backend, spec: CreateSpec, others: OthersJobs) -> Job:
    found = await recover(backend, spec, others)
    return found if found is not None else await backend.create(spec)


def _conflicted(request_id: str, conflicts: int) -> CreateConflicted:
    return CreateConflicted(f"The API answered 409 Conflict {conflicts} times to creating this batch with "
                            f"idempotency key {request_id}, so that key will not make the job",
                            status_code=409, code="conflict")
