"""The sandbox's account: files, batch jobs and their lifecycle, computed from the clock.

This engine is shared by every emulated API and knows none of their wire shapes: a job holds the
API's own request model opaquely, plus the :class:`LineFormat` that checks its input lines and
writes its result lines. No background task drives a job. Its status, counts and timestamps are a pure function of its
creation time, the configured pace, a possible cancel time and the current clock, evaluated on
each access. The two pieces of real work (checking the input file when ``validating`` ends, and
writing result files once terminal) run lazily in a worker thread, once per job.
"""

from __future__ import annotations

import itertools
import math
import tempfile
import time
import uuid
from collections.abc import AsyncIterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import anyio

from batch_mcp.sandbox.config import DO_MAX_BYTES, DO_MAX_REQUESTS, SandboxConfig
from batch_mcp.sandbox.faults import OPERATIONS, FaultPlan, RequestRecord
from batch_mcp.sandbox.ratelimit import RateLimiter
from batch_mcp.sandbox.results import LineFormat, write_results
from batch_mcp.sandbox.signing import UrlSigner
from batch_mcp.sandbox.validation import InputCheck, check_input

TERMINAL_STATUSES = frozenset({"completed", "failed", "expired", "cancelled"})
#: Terminal statuses whose partial or full results can be downloaded.
RESULT_STATUSES = frozenset({"completed", "cancelled", "expired"})


class ApiError(Exception):
    """A failure the API reports with this HTTP status, rendered in each API's own error body.

    ``param`` and ``code`` feed the APIs whose error bodies carry them (OpenAI's); others ignore them.
    """

    def __init__(
        self,
        status: int,
        message: str | None = None,
        *,
        retry_after_s: int | None = None,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after_s = retry_after_s
        self.param = param
        self.code = code


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
class StoredFile:
    file_id: str
    file_name: str
    path: Path
    created_at: float
    #: When its upload URL stops working (presigned uploads only); a fault may move it earlier.
    upload_deadline: float = math.inf
    #: Size of the completed upload; ``None`` until one completed (the create-time HEAD check).
    size: int | None = None
    purpose: str = "batch"
    #: When the service deletes it (OpenAI-family files); ``None``: never.
    expires_at: float | None = None


@dataclass
class Job:
    batch_id: str
    seq: int  # creation order, for newest-first listing and cursors
    #: The create body in the emulated API's own model, kept for echoing back and idempotent replays.
    request: Any
    input_file_id: str
    #: The input's bytes, which outlive the file's deletion from the account while the job needs them.
    input_path: Path
    lines: LineFormat
    created_at: float
    #: Length of this job's completion window.
    window_s: float
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

    @property
    def unfinished(self) -> int:
        """Requests that will never run: cut off by a cancel or the deadline."""
        return self.total - self.done if self.status in RESULT_STATUSES else 0


def _validated_at(job: Job, pace: SandboxConfig) -> float:
    return job.created_at + pace.validating_s


def _deadline(job: Job) -> float:
    return job.created_at + job.window_s


def needs_check(job: Job, now: float, pace: SandboxConfig) -> bool:
    """Whether the job has left ``validating`` (before expiring) and so needs its input checked."""
    return (
        job.check is None
        and now >= _validated_at(job, pace)
        and _validated_at(job, pace) < _deadline(job)
        and (job.cancel_requested_at is None or job.cancel_requested_at >= _validated_at(job, pace))
    )


def snapshot_at(job: Job, now: float, pace: SandboxConfig) -> Snapshot:
    """The job's state at ``now``. Requires ``job.check`` once ``needs_check`` would be true."""
    created, validated, deadline = job.created_at, _validated_at(job, pace), _deadline(job)
    cancel = job.cancel_requested_at
    if cancel is not None and cancel < min(validated, deadline):  # cancelled before it was ever checked
        ended = cancel + pace.cancelling_s
        if now >= ended:
            return Snapshot("cancelled", 0, 0, 0, updated_at=ended, expires_at=deadline, cancelled_at=ended)
        return Snapshot("cancelling", 0, 0, 0, updated_at=cancel, expires_at=deadline)
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

    def __init__(
        self,
        config: SandboxConfig,
        operations: tuple[str, ...] = OPERATIONS,
        limits: tuple[int, int] = (DO_MAX_REQUESTS, DO_MAX_BYTES),
    ) -> None:
        """``operations`` are the emulated API's verbs; ``limits`` its own (requests, bytes) per batch
        file, which the config may override."""
        self.config = config
        self.max_requests = config.max_requests or limits[0]
        self.max_bytes = config.max_bytes or limits[1]
        self.clock = Clock()
        self.signer = UrlSigner()
        self.limiter = RateLimiter(config.rate_limit_per_minute)
        self.faults = FaultPlan(operations)
        self.requests: list[RequestRecord] = []
        self.files: dict[str, StoredFile] = {}
        self.jobs: dict[str, Job] = {}
        #: Creation order, never reused (a deleted job leaves a gap, not a duplicate).
        self._seq = itertools.count()
        #: Result files by id, once written.
        self.result_records: dict[str, StoredFile] = {}
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

    def close(self) -> None:
        """Remove the storage directory if the sandbox created it."""
        if self._tempdir is not None:
            self._tempdir.cleanup()

    # --- files -------------------------------------------------------------------------------------

    def create_file(self, file_name: str, *, file_id: str | None = None, upload_ttl_s: float = math.inf) -> StoredFile:
        """Register a file whose bytes are still to come (see :meth:`store_upload`)."""
        file_id = file_id or new_id()
        now = self.clock.now()
        record = StoredFile(file_id, file_name, self.uploads_dir / f"{file_id}.jsonl", now, now + upload_ttl_s)
        self.files[file_id] = record
        return record

    def expire_upload_urls(self) -> None:
        """Make every upload URL handed out so far stop working now."""
        now = self.clock.now()
        for record in self.files.values():
            record.upload_deadline = min(record.upload_deadline, now)

    async def store_upload(self, record: StoredFile, chunks: AsyncIterable[bytes]) -> None:
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

    def add_job(
        self, request: Any, input_file_id: str, lines: LineFormat, window_s: float, *, batch_id: str | None = None
    ) -> Job:
        """Start a job on an uploaded file; the API checked the request and the file beforehand."""
        path = self.files[input_file_id].path
        now, seq = self.clock.now(), next(self._seq)
        job = Job(batch_id or new_id(), seq, request, input_file_id, path, lines, now, window_s)
        self.jobs[job.batch_id] = job
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
                            job.input_path,
                            job.lines.checker(),
                            batch_id=job.batch_id,
                            failure_rate=self.config.failure_rate,
                            max_requests=self.max_requests,
                            max_bytes=self.max_bytes,
                        )
                    )
        return snapshot_at(job, self.clock.now(), self.config)

    async def snapshots(self) -> list[tuple[Job, Snapshot]]:
        """Every job with its current state, newest first."""
        jobs = sorted(self.jobs.values(), key=lambda job: job.seq, reverse=True)
        return [(job, await self.snapshot(job)) for job in jobs]

    async def cancel(self, job: Job, *, while_validating: bool = False) -> Snapshot:
        """Ask the job to stop; ``while_validating`` says whether this API accepts that before the check."""
        snap = await self.snapshot(job)
        if snap.status in TERMINAL_STATUSES:
            raise ApiError(409, f"Batch '{job.batch_id}' is already {snap.status} and cannot be cancelled.")
        if snap.status == "validating" and not while_validating:
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
                        job.input_path,
                        output,
                        errors,
                        lines=job.lines,
                        batch_id=job.batch_id,
                        failures=job.check.failures if job.check else b"",
                        done=snap.done,
                        cut_off_by=snap.status if snap.unfinished else None,
                        created=int(snap.in_progress_at or job.created_at),
                    )
                )
                job.results = {job.output_file_id: output} | ({job.error_file_id: errors} if has_errors else {})
                now = self.clock.now()
                for file_id, path in job.results.items():
                    self.result_records[file_id] = StoredFile(
                        file_id, path.name, path, now, size=path.stat().st_size, purpose="batch_output"
                    )
        return job.results

    def result_path(self, file_id: str) -> Path | None:
        record = self.result_records.get(file_id)
        return record.path if record is not None else None

    def stats(self) -> dict[str, int]:
        return {
            "jobs": len(self.jobs),
            "files": len(self.files),
            "uploaded_files": sum(record.size is not None for record in self.files.values()),
            "requests": len(self.requests),
        }
