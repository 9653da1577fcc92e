"""Retry only what has no successful result yet, as a job linked to its parent."""

from __future__ import annotations

import anyio

from batch_mcp.domain import Progress
from batch_mcp.schemas.jobs import (
    RetryResult,
)
from batch_mcp.schemas.lines import RETRY_CANNOT_FIX
from batch_mcp.services.core import (
    ServiceCore,
    file_stem,
)
from batch_mcp.services.errors import (
    JobStillRunning,
)
from batch_mcp.services.results import (
    ResultIndex,
    write_unfinished,
)
from batch_mcp.services.workspace import Workspace


class Retrying(ServiceCore):
    """Rebuild and resubmit the unfinished requests of a finished job."""

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
            source.with_name(f"{source.stem}.retry-{file_stem(batch_id)[:64]}.jsonl"))
        index = ResultIndex(self.lineage.result_files(batch_id))
        cannot_fix = RETRY_CANNOT_FIX.get(view.provider or "", frozenset())
        failed, missing, invalid = await anyio.to_thread.run_sync(
            lambda: write_unfinished(source, index, target, cannot_fix=cannot_fix))
        fix_them = (f" {invalid} request(s) were rejected as invalid ({', '.join(sorted(cannot_fix))} in the results "
                    f"table's error_code): a retry would fail the same way, so fix them in {source.name} and "
                    "submit the corrected file." if invalid else "")
        if failed + missing == 0:
            return RetryResult(retried=0, failed=0, missing=0, not_retried=invalid,
                               next_step=("Nothing a retry can fix." + fix_them) if invalid
                               else "Nothing to retry: every request has a successful result.")
        record = self.store.get_job((view.parts or [batch_id])[0])
        # not new=True: asking twice for the same retry returns the job the first call made
        submitted = await self.submit(str(target), view.provider, view.endpoint,
                                      record.metadata if record else None,
                                      workspace=Workspace([target.parent]), on_progress=on_progress,
                                      parent_batch_id=batch_id)
        # the job as get_batch will show it: a retry names the job whose failures it reruns
        submitted = submitted.model_copy(update={"batch": submitted.batch.model_copy(
            update={"parent_batch_id": batch_id})})
        return RetryResult(retried=failed + missing, failed=failed, missing=missing, not_retried=invalid,
                           retry_file=str(target), submitted=submitted,
                           next_step="Call wait_for_batch on the new job, then download_batch_results on it: its "
                                     "table merges the earlier results, preferring the newest success." + fix_them)

    def _needs_download(self, batch_id: str) -> bool:
        record = self.store.get_job(batch_id)
        return record is not None and record.output_path is None and record.error_path is None
