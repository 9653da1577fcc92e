"""Results: links to them, and downloads streamed into new files then merged into one table."""

from __future__ import annotations

from pathlib import Path

import anyio

from batch_mcp.backends.base import Backend, ResultsNotReady
from batch_mcp.domain import Progress, ResultSource
from batch_mcp.schemas.jobs import (
    DownloadSummary,
    ResultLinksView,
)
from batch_mcp.services.core import (
    ServiceCore,
    file_stem,
)
from batch_mcp.services.errors import (
    IncompleteDownload,
    JobHasNoResults,
    ResultsExist,
)
from batch_mcp.services.lineage import is_group_id
from batch_mcp.services.workspace import NewFile, Workspace, refuse_link


class Downloads(ServiceCore):
    """Hand out result links and download results without overwriting or trusting empty files."""

    async def result_links(self, batch_id: str) -> ResultLinksView:
        if is_group_id(batch_id):
            view = await self._group_view(batch_id)
            parts = [await self.result_links(part) for part in view.parts or [] if part not in view.failed_parts]
            return ResultLinksView(batch_id=batch_id, parts=parts,
                                   expires_at=min((p.expires_at for p in parts if p.expires_at), default=None))
        backend, sources = await self._sources(batch_id)
        if not backend.capabilities.shareable_result_links:
            return ResultLinksView(batch_id=batch_id, next_step=(
                f"{backend.capabilities.label} serves result files only with the API key, so there are no links "
                "to share: call download_batch_results, which saves and summarises them."))
        links = {source.kind: source for source in sources}
        output, errors = links.get("output"), links.get("errors")
        return ResultLinksView(batch_id=batch_id, output_file_url=output.shareable_url if output else None,
                               error_file_url=errors.shareable_url if errors else None,
                               expires_at=min((s.expires_at for s in sources if s.expires_at), default=None))

    async def _sources(self, batch_id: str) -> tuple[Backend, list[ResultSource]]:
        """The job's backend and result files; a job that ended without any says so rather than "not ready"."""
        backend, native = self.job_backend(batch_id)
        try:
            sources = await backend.results(native)
        except ResultsNotReady:
            await self._never_has_results(batch_id)
            raise
        if not sources:
            await self._never_has_results(batch_id)
            raise ResultsNotReady(f"The results of job {batch_id} are not available yet", backend=backend.name,
                                  code="results_not_ready")
        return backend, sources

    async def _never_has_results(self, batch_id: str) -> None:
        view = await self.view(batch_id)
        if view.terminal and not view.results_ready:
            raise JobHasNoResults(f"Job {batch_id} is {view.status} and will never have results. {view.next_step}")

    async def download(self, batch_id: str, dest_dir: str | None = None, *, overwrite: bool = False,
                       on_progress: Progress | None = None, workspace: Workspace | None = None) -> DownloadSummary:
        """Stream the result files into an allowed folder, then merge and join them into one results table.

        For a retry, the table covers the whole original input and prefers the newest success; for a
        group, it covers every part.
        """
        view = await self.view(batch_id)
        if not view.results_ready:
            raise ResultsNotReady(
                f"Job {batch_id} is {view.status}; results exist once it is completed, cancelled or expired. "
                "Call wait_for_batch first", code="results_not_ready")
        workspace = workspace or self.workspace
        folder = workspace.output_dir(dest_dir, default=Path("batch-results"))  # in the first allowed folder
        stem = file_stem(batch_id)
        table_paths = (folder / f"{stem}.results.csv", folder / f"{stem}.results.jsonl")
        members = [part for part in view.parts if part not in view.failed_parts] if view.parts else [batch_id]
        targets = {member: {"output": folder / f"{file_stem(member)}.output.jsonl",
                            "errors": folder / f"{file_stem(member)}.errors.jsonl"} for member in members}
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
        cost = self._actual_cost(usage, self.resolve(members[0])[0], merged=bool(view.parts or view.parent_batch_id))
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

    async def _download_files(self, batch_id: str, targets: dict[str, Path], overwrite: bool,
                              on_progress: Progress | None) -> dict[str, Path]:
        """Each result file into a new file of its own (one stream holding both counts as the output)."""
        backend, sources = await self._sources(batch_id)
        saved: dict[str, Path] = {}
        for source in sources:
            kind = "errors" if source.kind == "errors" else "output"
            with NewFile(targets[kind], overwrite=overwrite) as new:
                await backend.download(source, new.out, on_progress=on_progress)
            saved[kind] = targets[kind]
        self._check_complete(batch_id, saved)
        return saved

    def _check_complete(self, batch_id: str, saved: dict[str, Path]) -> None:
        """Refuse result files that hold nothing for a job that reports finished requests: summarised, they
        would read as "no results, retry everything", and following that pays for every request again."""
        record = self.store.get_job(batch_id)
        finished = record.counts.succeeded + record.counts.failed if record else 0
        if finished and all(path.stat().st_size == 0 for path in saved.values()):
            for path in saved.values():
                path.unlink()  # written just now by this download: an empty file must not pass for results
            raise IncompleteDownload(
                f"The download of job {batch_id} looks incomplete: the job reports {finished} finished "
                "request(s), but storage sent empty result files, so nothing was kept. Download again in a few "
                "minutes (get_batch shows the job's counts); do not retry its requests: they already ran, and a "
                "retry would pay for them again.")
