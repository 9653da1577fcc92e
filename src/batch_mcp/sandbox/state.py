"""The sandbox's account: files and batch jobs, kept by the :class:`Ledger`, plus the test instrumentation.

This engine is shared by every emulated API and knows none of their wire shapes: a job holds the
API's own request model opaquely, plus the :class:`LineFormat` that checks its input lines and
writes its result lines. Its lifecycle is a function of the clock (:mod:`batch_mcp.sandbox.lifecycle`).
The two pieces of real work (checking the input file when ``validating`` ends, and writing result
files once terminal) run lazily in a worker thread, once per job, and are kept in the ledger.

The account lives in ``config.storage_dir`` when set, shared with every process that uses the folder;
the instrumentation (faults, the request log, the rate budget, the clock's offset) is this process's own.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import anyio
from pydantic import BaseModel

from batch_mcp.sandbox.config import SandboxConfig
from batch_mcp.sandbox.faults import FaultPlan, RequestRecord
from batch_mcp.sandbox.ledger import RESULT, UPLOAD, Job, Ledger, Pace, Records, StoredFile, new_id
from batch_mcp.sandbox.lifecycle import TERMINAL_STATUSES, Snapshot, needs_check, snapshot_at
from batch_mcp.sandbox.ratelimit import RateLimiter
from batch_mcp.sandbox.results import LineFormat, write_results
from batch_mcp.sandbox.signing import UrlSigner
from batch_mcp.sandbox.validation import InputCheck, check_input


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

    def thaw(self) -> None:
        """Let real time pass again, from where the frozen clock stood (nothing jumps ahead)."""
        if self.frozen_at is not None:
            self.offset_s += self.frozen_at - time.time()
            self.frozen_at = None


@dataclass(frozen=True)
class EmulatedApi:
    """What the engine needs of one emulated API."""

    #: Its verbs, which faults may target.
    operations: tuple[str, ...]
    #: Its own (requests, bytes) per batch file, which the config may override.
    limits: tuple[int, int]
    #: Its create-batch body, in which a job's request is stored and revived.
    request_model: type[BaseModel]
    #: The lines a job created with that body reads and writes.
    line_format: Callable[[Any], LineFormat]


class Sandbox:
    """One account of an emulated API: its files and jobs in the ledger, plus this process's instrumentation."""

    def __init__(self, config: SandboxConfig, api: EmulatedApi) -> None:
        self.config = config
        self.max_requests = config.max_requests or api.limits[0]
        self.max_bytes = config.max_bytes or api.limits[1]
        self.clock = Clock()
        self.signer = UrlSigner()
        self.limiter = RateLimiter(config.rate_limit_per_minute)
        self.api = api
        self.faults = FaultPlan(api.operations)
        self.requests: list[RequestRecord] = []
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
        self.ledger = Ledger(root, api.request_model, api.line_format)
        #: Uploaded (or announced) input files, jobs and result files by id: live views of the ledger.
        self.files: Records[StoredFile] = Records(partial(self.ledger.file, purpose=UPLOAD),
                                                  partial(self.ledger.file_ids, UPLOAD))
        self.jobs: Records[Job] = Records(self.ledger.job, self.ledger.job_ids)
        self.result_records: Records[StoredFile] = Records(partial(self.ledger.file, purpose=RESULT),
                                                           partial(self.ledger.file_ids, RESULT))
        #: Held while this process does a job's lazy work, so it is done once here (the ledger settles races
        #: with other processes).
        self._working: dict[str, anyio.Lock] = {}

    def close(self) -> None:
        """Close the ledger, and remove the storage directory if the sandbox created it."""
        self.ledger.close()
        if self._tempdir is not None:
            self._tempdir.cleanup()

    # --- files -------------------------------------------------------------------------------------

    def upload_path(self, file_id: str) -> Path:
        return self.uploads_dir / f"{file_id}.jsonl"

    def create_file(
        self,
        file_name: str,
        *,
        file_id: str | None = None,
        upload_ttl_s: float = math.inf,
        size: int | None = None,
        ttl_s: float | None = None,
    ) -> StoredFile:
        """Register a file: one whose bytes are still to come (see :meth:`store_upload`), or, given its
        ``size``, one already at :meth:`upload_path`; ``ttl_s`` is how long the service keeps it."""
        file_id = file_id or new_id()
        now = self.clock.now()
        record = StoredFile(file_id, file_name, self.upload_path(file_id), now, now + upload_ttl_s, size,
                            expires_at=None if ttl_s is None else now + ttl_s)
        self.ledger.add_file(record)
        return record

    def expire_upload_urls(self) -> None:
        """Make every upload URL handed out so far stop working now."""
        self.ledger.cap_upload_deadlines(self.clock.now())

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
        self.ledger.set_size(record.file_id, size)
        record.size = size

    def delete_file(self, record: StoredFile) -> None:
        """Remove a file from the account; its bytes stay while a job still reads them."""
        if not self.ledger.delete_file(record.file_id):
            record.path.unlink(missing_ok=True)

    # --- jobs --------------------------------------------------------------------------------------

    def add_job(
        self,
        request: BaseModel,
        input_file_id: str,
        window_s: float,
        *,
        batch_id: str | None = None,
        result_ids: tuple[str, str] | None = None,
        key: str | None = None,
        check: InputCheck | None = None,
    ) -> Job:
        """Start a job on an uploaded file; the API checked the request and the file beforehand.

        ``result_ids`` name its (output, error) files; ``key`` is an idempotency key: if a job (perhaps
        made by another process a moment ago) already holds it, that job is returned instead. ``check``
        is the input's check when the API made it on arrival (else it is made when validation ends).
        """
        output_id, error_id = result_ids or (new_id(), new_id())
        job = Job(batch_id or new_id(), request, input_file_id, self.upload_path(input_file_id),
                  self.api.line_format(request), self.clock.now(), window_s, Pace.of(self.config), output_id, error_id,
                  check=check)
        return self.ledger.add_job(job, key)

    def delete_job(self, job: Job) -> bool:
        """Remove an ended job, its result files and the bytes nothing else reads; ``False`` if it was gone."""
        unread = self.ledger.delete_job(job.batch_id)
        if unread is None:
            return False
        for path in unread:
            path.unlink(missing_ok=True)
        self._working.pop(job.batch_id, None)
        return True

    def job(self, batch_id: str) -> Job:
        job = self.ledger.job(batch_id)
        if job is None:
            raise ApiError(404, f"Batch '{batch_id}' was not found.")
        return job

    def _lock(self, job: Job) -> anyio.Lock:
        return self._working.setdefault(job.batch_id, anyio.Lock())

    async def snapshot(self, job: Job) -> Snapshot:
        """The job now, checking its input first (in a worker thread) if validation just ended."""
        if needs_check(job, self.clock.now()):
            async with self._lock(job):
                job.check = self.ledger.stored_check(job.batch_id)  # done meanwhile, here or elsewhere?
                if job.check is None:
                    check = await anyio.to_thread.run_sync(
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
                    job.check = self.ledger.record_check(job.batch_id, check)
        return snapshot_at(job, self.clock.now())

    async def snapshots(self) -> list[tuple[Job, Snapshot]]:
        """Every job with its current state, newest first."""
        return [(job, await self.snapshot(job)) for job in self.ledger.jobs()]

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
        job.cancel_requested_at = self.ledger.record_cancel(job.batch_id, self.clock.now())
        return await self.snapshot(job)

    async def result_files(
        self, job: Job, snap: Snapshot, *, publish_output: bool = True, ttl_s: float | None = None
    ) -> dict[str, Path]:
        """The job's result files by file id (output first, then errors if any), written on first use.

        The error file is published (downloadable by id) if written; the output file unless
        ``publish_output`` is false. ``ttl_s`` is how long the service keeps them.
        """
        assert snap.has_results
        async with self._lock(job):
            job.results = self.ledger.stored_results(job.batch_id)
            if job.results is None:
                attempt = new_id()  # a process racing us writes its own files; the first recorded wins
                output = self.results_dir / f"{job.output_file_id}.{attempt}.jsonl"
                errors = self.results_dir / f"{job.error_file_id}.{attempt}.jsonl"
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
                written = {job.output_file_id: output} | ({job.error_file_id: errors} if has_errors else {})
                now = self.clock.now()
                published = [
                    StoredFile(file_id, f"{file_id}.jsonl", path, now, size=path.stat().st_size, purpose=RESULT,
                               expires_at=None if ttl_s is None else now + ttl_s)
                    for file_id, path in written.items()
                    if publish_output or file_id != job.output_file_id
                ]
                kept = self.ledger.record_results(job.batch_id, written, published)
                if kept != written:
                    for path in written.values():
                        path.unlink()
                if kept is None:
                    raise ApiError(404, f"Batch '{job.batch_id}' was not found.")
                job.results = kept
        return job.results

    def result_path(self, file_id: str) -> Path | None:
        record = self.result_records.get(file_id)
        return record.path if record is not None else None

    def stats(self) -> dict[str, int]:
        return {
            "jobs": len(self.jobs),
            "files": len(self.files),
            "uploaded_files": self.ledger.uploaded_count(),
            "requests": len(self.requests),
        }
