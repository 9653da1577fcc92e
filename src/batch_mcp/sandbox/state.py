"""The sandbox's account: input files, batch jobs and their lifecycle, computed from the clock.

No background task drives a job. Its status, counts and timestamps are a pure function of its
creation time, the configured pace, a possible cancel time and the current clock, evaluated on
each access. The two pieces of real work (checking the input file when ``validating`` ends, and
writing result files once terminal) run lazily in a worker thread, once per job.
"""

from __future__ import annotations

import math
import tempfile
import time
import uuid
from collections.abc import AsyncIterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import anyio

from batch_mcp.sandbox.config import SandboxConfig
from batch_mcp.sandbox.faults import FaultPlan, RequestRecord
from batch_mcp.sandbox.ratelimit import RateLimiter
from batch_mcp.sandbox.results import write_results
from batch_mcp.sandbox.signing import UrlSigner
from batch_mcp.sandbox.validation import InputCheck, check_input
from batch_mcp.schemas import RESULT_STATUSES, TERMINAL_STATUSES, CreateBatchRequest


class ApiError(Exception):
    """A failure the API reports as ``{id, message, request_id}`` with this HTTP status."""

    def __init__(self, status: int, message: str | None = None, *, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after_s = retry_after_s


class Clock:
    """Wall-clock epoch seconds that tests may move forward instead of sleeping."""

    def __init__(self) -> None:
        self.offset_s = 0.0
        self.frozen_at: float | None = None

    def now(self) -> float:
        return (self.frozen_at if self.frozen_at is not None else time.time()) + self.offset_s

    def advance(self, seconds: float) -> None:
        self.offset_s += seconds

    def freeze(self) -> None:
        """Stop real time from passing, so only ``advance`` moves the clock: exact timings on a slow machine."""
        self.frozen_at = time.time()


def new_id() -> str:
    return str(uuid.uuid4())


@dataclass
class InputFile:
    file_id: str
    file_name: str
    path: Path
    created_at: float
    #: When its upload URL stops working; a fault may move it earlier.
    upload_deadline: float
    #: Size of the completed upload; ``None`` until one completed (the create-time HEAD check).
    size: int | None = None


@dataclass
class Job:
    batch_id: str
    seq: int  # creation order, for newest-first listing and cursors
    request: CreateBatchRequest
    created_at: float
    output_file_id: str = field(default_factory=new_id)
    error_file_id: str = field(default_factory=new_id)
    cancel_requested_at: float | None = None
    check: InputCheck | None = None
    #: Result file paths by file id, once written.
    results: dict[str, Path] | None = None
    lock: anyio.Lock = field(default_factory=anyio.Lock)


@dataclass(frozen=True)
class Snapshot:
    """A job as seen at one instant. ``status`` may be ``queued``; dialects map it as they must."""

    status: str
    total: int
    done: int  # requests finished (succeeded or failed); frozen once the job stops
    failed: int
    updated_at: float
    expires_at: float  # end of the completion window
    queued_at: float | None = None  # validation passed: handed to the provider
    in_progress_at: float | None = None
    finalizing_at: float | None = None
    completed_at: float | None = None
    failed_at: float | None = None
    cancelled_at: float | None = None
    expired_at: float | None = None

    @property
    def has_results(self) -> bool:
        return self.status in RESULT_STATUSES


def _validated_at(job: Job, pace: SandboxConfig) -> float:
    return job.created_at + pace.validating_s


def _deadline(job: Job, pace: SandboxConfig) -> float:
    return job.created_at + pace.completion_window_s


def needs_check(job: Job, now: float, pace: SandboxConfig) -> bool:
    """Whether the job has left ``validating`` (before expiring) and so needs its input checked."""
    return (
        job.check is None
        and now >= _validated_at(job, pace)
        and _validated_at(job, pace) < _deadline(job, pace)
    )


def snapshot_at(job: Job, now: float, pace: SandboxConfig) -> Snapshot:
    """The job's state at ``now``. Requires ``job.check`` once ``needs_check`` would be true."""
    created, validated, deadline = job.created_at, _validated_at(job, pace), _deadline(job, pace)
    if now < min(validated, deadline):
        return Snapshot("validating", 0, 0, 0, updated_at=created, expires_at=deadline)
    if deadline <= validated:
        return Snapshot("expired", 0, 0, 0, updated_at=deadline, expires_at=deadline, expired_at=deadline)
    check = job.check
    assert check is not None, "check the input before taking a snapshot past validation"
    if check.errors:
        return Snapshot("failed", 0, 0, 0, updated_at=validated, expires_at=deadline, failed_at=validated)

    started = validated + pace.queued_s
    drained = started + check.total / pace.requests_per_s
    finished = drained + pace.finalizing_s
    if job.cancel_requested_at is not None:
        stop, end_status, ended = (
            job.cancel_requested_at,
            "cancelled",
            job.cancel_requested_at + pace.cancelling_s,
        )
    elif deadline < finished:
        stop, end_status, ended = deadline, "expired", deadline
    else:
        stop, end_status, ended = finished, "completed", finished

    cut = min(now, stop)
    done = (
        check.total
        if cut >= drained
        else min(check.total, math.floor(max(0.0, cut - started) * pace.requests_per_s))
    )
    events = {  # Snapshot fields; the end event is named after the final status (completed_at, ...)
        "queued_at": validated,
        "in_progress_at": started if started <= cut else None,
        "finalizing_at": drained if drained <= cut else None,
        f"{end_status}_at": ended if now >= ended else None,
    }
    if now >= ended:
        status = end_status
    elif job.cancel_requested_at is not None:
        status = "cancelling"
    else:
        status = "finalizing" if now >= drained else "in_progress" if now >= started else "queued"
    happened = [t for t in (*events.values(), job.cancel_requested_at) if t is not None]
    return Snapshot(
        status,
        check.total,
        done,
        check.failures[:done].count(1),
        updated_at=max(happened),
        expires_at=deadline,
        **events,
    )


class Sandbox:
    """All state of one sandbox: the account's files and jobs, plus the test instrumentation."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.clock = Clock()
        self.signer = UrlSigner()
        self.limiter = RateLimiter(config.rate_limit_per_minute)
        self.faults = FaultPlan()
        self.requests: list[RequestRecord] = []
        self.files: dict[str, InputFile] = {}
        self.jobs: dict[str, Job] = {}
        self._by_request_id: dict[str, Job] = {}
        self._tempdir: tempfile.TemporaryDirectory[str] | None = None
        if config.storage_dir is None:
            self._tempdir = tempfile.TemporaryDirectory(prefix="batch-mcp-sandbox-")
            root = Path(self._tempdir.name)
        else:
            root = config.storage_dir
        self.uploads_dir = root / "uploads"
        self.results_dir = root / "results"
        self.uploads_dir.mkdir(parents=True, exist_ok=True)
        self.results_dir.mkdir(parents=True, exist_ok=True)
        self._result_paths: dict[str, Path] = {}

    def close(self) -> None:
        """Remove the storage directory if the sandbox created it."""
        if self._tempdir is not None:
            self._tempdir.cleanup()

    # --- files -------------------------------------------------------------------------------------

    def create_file(self, file_name: str) -> InputFile:
        file_id = new_id()
        now = self.clock.now()
        ttl = self.faults.upload_url_ttl_s or self.config.upload_url_ttl_s
        record = InputFile(file_id, file_name, self.uploads_dir / f"{file_id}.jsonl", now, now + ttl)
        self.files[file_id] = record
        return record

    def expire_upload_urls(self) -> None:
        """Make every upload URL handed out so far stop working now."""
        now = self.clock.now()
        for record in self.files.values():
            record.upload_deadline = min(record.upload_deadline, now)

    async def store_upload(self, record: InputFile, chunks: AsyncIterable[bytes]) -> None:
        """Write the body to disk as it arrives; the file counts as uploaded only once complete.

        Buffered synchronous writes measured as fast as writing from a worker thread here, since the
        HTTP parser, not the disk, bounds the throughput.
        """
        partial_path = record.path.with_suffix(f".{new_id()}.part")  # concurrent PUTs must not mix
        size = 0
        try:
            with partial_path.open("wb", buffering=1 << 20) as sink:
                async for chunk in chunks:
                    sink.write(chunk)
                    size += len(chunk)
        except BaseException:
            partial_path.unlink(missing_ok=True)
            raise
        partial_path.replace(record.path)
        record.size = size

    # --- jobs --------------------------------------------------------------------------------------

    def create_batch(self, request: CreateBatchRequest) -> Job:
        """Create a job, or return the one already created with this idempotency key."""
        existing = self._by_request_id.get(request.request_id)
        if existing is not None:
            if existing.request != request:
                raise ApiError(
                    409,
                    f"request_id '{request.request_id}' was already used for batch "
                    f"{existing.batch_id} with a different request body.",
                )
            return existing
        record = self.files.get(request.file_id)
        if record is None:
            raise ApiError(404, f"Input file '{request.file_id}' was not found.")
        if record.size is None:
            raise ApiError(
                400,
                f"Input file '{request.file_id}' has not been uploaded: PUT its bytes to the "
                "upload_url before creating the batch.",
            )
        job = Job(new_id(), len(self.jobs), request, self.clock.now())
        self.jobs[job.batch_id] = job
        self._by_request_id[request.request_id] = job
        return job

    def job(self, batch_id: str) -> Job:
        job = self.jobs.get(batch_id)
        if job is None:
            raise ApiError(404, f"Batch '{batch_id}' was not found.")
        return job

    async def snapshot(self, job: Job) -> Snapshot:
        """The job now, checking its input first (in a worker thread) if validation just ended."""
        if needs_check(job, self.clock.now(), self.config):
            async with job.lock:
                if job.check is None:
                    job.check = await anyio.to_thread.run_sync(
                        partial(
                            check_input,
                            self.files[job.request.file_id].path,
                            provider=job.request.provider,
                            endpoint=job.request.endpoint,
                            batch_id=job.batch_id,
                            failure_rate=self.config.failure_rate,
                            max_requests=self.config.max_requests,
                            max_bytes=self.config.max_bytes,
                        )
                    )
        return snapshot_at(job, self.clock.now(), self.config)

    async def snapshots(self) -> list[tuple[Job, Snapshot]]:
        """Every job with its current state, newest first."""
        jobs = sorted(self.jobs.values(), key=lambda job: job.seq, reverse=True)
        return [(job, await self.snapshot(job)) for job in jobs]

    async def cancel(self, job: Job) -> Snapshot:
        snap = await self.snapshot(job)
        if snap.status in TERMINAL_STATUSES:
            raise ApiError(409, f"Batch '{job.batch_id}' is already {snap.status} and cannot be cancelled.")
        if snap.status == "validating":
            raise ApiError(
                409,
                f"Batch '{job.batch_id}' is still validating and has not been submitted to the "
                "provider yet, so there is nothing to cancel. Retry once it is in progress.",
            )
        if job.cancel_requested_at is None:
            job.cancel_requested_at = self.clock.now()
        return await self.snapshot(job)

    async def result_files(self, job: Job, snap: Snapshot) -> dict[str, Path]:
        """The job's result files by file id (output first, then errors if any), written on first use."""
        assert snap.has_results
        async with job.lock:
            if job.results is None:
                output = self.results_dir / f"{job.output_file_id}.jsonl"
                errors = self.results_dir / f"{job.error_file_id}.jsonl"
                has_errors = await anyio.to_thread.run_sync(
                    partial(
                        write_results,
                        self.files[job.request.file_id].path,
                        output,
                        errors,
                        provider=job.request.provider,
                        endpoint=job.request.endpoint,
                        batch_id=job.batch_id,
                        failures=job.check.failures if job.check else b"",
                        done=snap.done,
                        created=int(snap.in_progress_at or job.created_at),
                    )
                )
                job.results = {job.output_file_id: output} | (
                    {job.error_file_id: errors} if has_errors else {}
                )
                self._result_paths.update(job.results)
        return job.results

    def result_path(self, file_id: str) -> Path | None:
        return self._result_paths.get(file_id)

    def stats(self) -> dict[str, int]:
        return {
            "jobs": len(self.jobs),
            "files": len(self.files),
            "uploaded_files": sum(record.size is not None for record in self.files.values()),
            "requests": len(self.requests),
        }
