"""Deleting an ended job at the provider: what it removes there, and what stays here.

The provider's copy goes (the batch and its results, for good). What this server made stays: the job
store keeps its record, marked deleted, so the job is still listed and a second delete is answered
rather than refused; result files it downloaded are the user's now and are never removed (they are
named in the answer, to delete by hand if no longer wanted). The input file is the user's and is
never touched.
"""

from __future__ import annotations

from datetime import UTC, datetime

from batch_mcp.backends.base import Deleting, NotFoundError
from batch_mcp.domain import Job
from batch_mcp.schemas.jobs import DELETED_AT, DeleteResult
from batch_mcp.services.core import ServiceCore
from batch_mcp.services.errors import NotDeletable
from batch_mcp.services.lineage import is_group_id


class Deletions(ServiceCore):
    """Delete ended jobs on the backends that can."""

    async def delete(self, batch_id: str) -> DeleteResult:
        """Delete an ended job at its provider; the same call again answers ``deleted_now=false``."""
        if is_group_id(batch_id):
            raise NotDeletable(f"{batch_id} is a job group; delete its parts one by one (get_batch lists them "
                               "in `parts`).")
        backend, native = self.job_backend(batch_id)
        if not (backend.capabilities.deletes and isinstance(backend, Deleting)):
            raise NotDeletable(f"{backend.capabilities.label} cannot delete batches; nothing was changed. Its jobs "
                               "and results stay until the provider's retention ends.")
        try:
            job = await self.get(batch_id)
        except NotFoundError:
            if (deleted := self._deleted_before(batch_id)) is not None:
                return self._answer(deleted, deleted_now=False)
            raise
        if not job.is_terminal:
            raise NotDeletable(f"{job.ref} is {job.status.value}; only an ended job can be deleted, and nothing was "
                               "changed. To stop it, call cancel_batch, then wait_for_batch until it has ended, "
                               "then delete_batch.")
        await backend.delete(native)
        gone = job.model_copy(update={"results_ready": False,
                                      "extra": {**job.extra, DELETED_AT: datetime.now(UTC).isoformat()}})
        self.store.upsert_batch(gone)
        return self._answer(gone, deleted_now=True)

    def _deleted_before(self, batch_id: str) -> Job | None:
        record = self.store.get_job(batch_id)
        return record.last_seen if record is not None and DELETED_AT in record.last_seen.extra else None

    def _answer(self, job: Job, *, deleted_now: bool) -> DeleteResult:
        record = self.store.get_job(job.ref)
        kept = [str(path) for path in (record.output_path, record.error_path, record.table_path) if path] \
            if record is not None else []
        return DeleteResult(batch_id=job.ref, status=job.status.value, deleted_now=deleted_now,
                            deleted_at=job.extra[DELETED_AT], kept_files=kept,
                            next_step="Deleted at the provider, results included; this server still lists the job. "
                                      + ("The result files downloaded earlier stay where they are (kept_files); "
                                         "delete them yourself if they are no longer needed." if kept else
                                         "Its results were never downloaded here, so they are gone."))
