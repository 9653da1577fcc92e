"""Watching jobs: get, view, wait, list, cancel, and what the store remembers of each."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from batch_mcp.backends.base import BackendError, ConflictError, NotFoundError
from batch_mcp.domain import Job, JobStatus, Progress
from batch_mcp.schemas.jobs import (
    DELETED_AT,
    BatchList,
    BatchView,
    CostReport,
    JobsPage,
    WaitResult,
)
from batch_mcp.services.core import (
    ServiceCore,
)
from batch_mcp.services.lineage import is_group_id
from batch_mcp.services.listing import JOBS_PAGE_SIZE, decode_cursor, job_summary, recorded_jobs
from batch_mcp.services.waiting import wait_for
from batch_mcp.store import (
    JobRecord,
)

log = logging.getLogger(__name__)


class Jobs(ServiceCore):
    """Read and steer jobs; every answer is recorded so nothing the server made is forgotten."""

    async def refresh_active(self, scan: int = 500) -> int:
        """Look again at every job of ours still running (among the ``scan`` newest) on a configured backend,
        so that a change reaches subscribers even when no agent is waiting on it; how many were looked at."""
        looked = 0
        for record in self.store.list_jobs(limit=scan):
            if record.last_seen.is_terminal or record.backend not in self.registry.names:
                continue
            looked += 1
            try:
                await self.get(record.ref)
            except BackendError as exc:  # one job's fault must not stop the sweep; the next one tries again
                log.debug("could not look at %s: %s", record.ref, exc)
        return looked

    async def get(self, batch_id: str) -> Job:
        backend, native = self.job_backend(batch_id)
        job = await backend.get(native)
        await self._seen(job)
        return job

    async def view(self, job_id: str) -> BatchView:
        """A job (or job group) as agents see it, with its actual cost once results were downloaded."""
        if is_group_id(job_id):
            return await self._group_view(job_id)
        try:
            job = await self.get(job_id)
        except NotFoundError:
            record = self.store.get_job(job_id)
            if record is None or DELETED_AT not in record.last_seen.extra:
                raise
            job = record.last_seen  # deleted at the provider (delete_batch): as it was when it ended
        view = BatchView.from_job(job)
        record = self.store.get_job(job.ref)
        if record is None:
            return view
        cost = (self._actual_cost(record.usage, record.backend, merged=record.parent_batch_id is not None)
                if record.usage else None)
        return view.model_copy(update={"cost": cost, "parent_batch_id": record.parent_batch_id})

    def _actual_cost(self, usage: dict[str, list[int]], backend: str, *, merged: bool) -> CostReport:
        """What the usage cost at ``backend``'s batch prices (each backend bills its own)."""
        report = self.prices.report({m: (u[0], u[1], u[2]) for m, u in usage.items()}, estimated=False,
                                    backend=backend)
        if not merged:
            return report
        return report.model_copy(update={"note": report.note + " It covers every request in the merged table (all "
                                         "parts, and the jobs this one retries): do not add it to theirs."})

    async def wait(self, batch_id: str, timeout_s: float, poll_interval_s: float | None = None,
                   on_progress: Progress | None = None) -> WaitResult:
        """Poll until a terminal status or the (hard) deadline, backing off while nothing changes."""
        # a short wait polls a few times within it, so a job that ends meanwhile is seen before the deadline
        interval = poll_interval_s or min(self.default_poll_interval_s, timeout_s / 4)
        return await wait_for(batch_id, lambda: self.view(batch_id), lambda: self._recorded_view(batch_id),
                              timeout_s=timeout_s, interval_s=interval, on_progress=on_progress)

    def _recorded_view(self, job_id: str) -> BatchView | None:
        """A job (or group) as last recorded, for when the API gives no answer in time."""
        if not is_group_id(job_id):
            record = self.store.get_job(job_id)
            return BatchView.from_job(record.last_seen) if record else None
        group = self.store.get_group(job_id)
        if group is None:
            return None
        return BatchView.from_group(job_id, self._recorded_parts(job_id), group.parts)

    async def list(self, status: str | None = None, limit: int = 20, cursor: str | None = None, *,
                   backend: str | None = None) -> BatchList:
        page = await self.backend_for(backend).list(JobStatus(status) if status else None, limit, cursor)
        summaries = []
        for job in page.jobs:
            record = self.store.get_job(job.ref)
            if record is not None:
                await self._seen(job)
            elif self.recorded_only:
                continue  # hosted: the account may be shared, the jobs shown are the caller's own
            summaries.append(job_summary(BatchView.from_job(job), record))
        return BatchList(batches=summaries, next_cursor=page.next_cursor, has_more=page.has_more)

    async def cancel(self, batch_id: str) -> BatchView:
        """Cancel a job, or every running part of a job group (a part that cannot be cancelled is skipped)."""
        if not is_group_id(batch_id):
            backend, native = self.job_backend(batch_id)
            await backend.cancel(native)
            return BatchView.from_job(await self.get(batch_id))  # some answers carry only id and status
        view = await self._group_view(batch_id)
        refusals: list[ConflictError] = []
        for part in view.parts or []:
            backend, native = self.job_backend(part)
            try:
                await backend.cancel(native)
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
            stale = []
            for name in self.registry.names or (self.registry.default,):
                try:
                    await self.list(limit=limit, backend=name)  # records the live status of tracked jobs among them
                except BackendError as exc:
                    stale.append(f"{name}: {exc}")
            if stale:
                note = f"Live status unavailable, showing the last recorded status: {'; '.join(stale)}"
        return recorded_jobs(self.store, before, limit).model_copy(update={"note": note})

    async def job_detail(self, batch_id: str) -> dict[str, Any]:
        """One job: live status when the API answers, plus what the store recorded."""
        if is_group_id(batch_id):
            return (await self._group_view(batch_id)).model_dump(mode="json")
        record = self.store.get_job(batch_id)
        try:
            job = await self.get(batch_id)
        except BackendError:
            if record is None:
                raise
            job = record.last_seen
        record = self.store.get_job(job.ref)
        local = _local_fields(record) if record else {"tracked_locally": False}
        return {**BatchView.from_job(job).model_dump(mode="json"), **local}


def _str(path: Path | None) -> str | None:
    return str(path) if path else None


def _local_fields(record: JobRecord) -> dict[str, Any]:
    return {"tracked_locally": True, "input_path": _str(record.path), "request_id": record.request_id,
            "output_path": _str(record.output_path), "error_path": _str(record.error_path)}
