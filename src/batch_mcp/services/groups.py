"""Job groups: a valid file over one batch's limits runs as parts that fit, shown as one job."""

from __future__ import annotations

from pathlib import Path

import anyio

from batch_mcp.backends.base import NotFoundError
from batch_mcp.domain import Counts, Job, Progress, Ref
from batch_mcp.schemas.jobs import (
    BatchView,
    SubmitResult,
)
from batch_mcp.schemas.preflight import PreflightReport
from batch_mcp.services.core import (
    RESUBMITTABLE,
    Fingerprint,
    ServiceCore,
    limits_text,
    unchanged_since_check,
)
from batch_mcp.services.split import parts_folder, split_requests
from batch_mcp.services.workspace import Workspace


class Groups(ServiceCore):
    """Submit a file as a group of parts, and show the group as one job."""

    async def _submit_group(self, report: PreflightReport, metadata: dict[str, str] | None, *, new: bool,
                            on_progress: Progress | None, parent_batch_id: str | None, backend: str,
                            window: str) -> SubmitResult:
        """Split a valid file over one batch's limits into parts that fit and submit each, as one job group."""
        path = Path(report.path)
        limits = self.limits_for(backend)
        content = report.sha256 if parent_batch_id is None else f"{report.sha256}:retry-of:{parent_batch_id}"
        key = Fingerprint(content, report.provider, report.endpoint, metadata, backend, window)
        fingerprint = key.digest
        async with self._claimed(key) as claim:
            group = None if new else self.store.find_group_by_fingerprint(fingerprint)
            if group is not None and (await self._group_view(group.group_id)).status in RESUBMITTABLE:
                group = None
            # beside the input, and checked like any output: a planted link must not send the parts elsewhere
            parts_name = parts_folder(path, report.sha256, limits.request_cap, limits.byte_cap)
            folder = Workspace([path.parent]).output_dir(parts_name, default=path.parent)
            parts = await anyio.to_thread.run_sync(
                lambda: split_requests(path, folder, limits.request_cap, limits.byte_cap))
            unchanged_since_check(report)
            reused = group is not None
            group = group or self.store.create_group(path, report.sha256, fingerprint, len(parts), parent_batch_id,
                                                     claim, backend=backend)
            done = {s.path: s for s in self.store.group_submissions(group.group_id)}
            for part in parts:
                submission = done.get(part)
                if submission is not None and submission.batch_id is None:
                    await self._resend(submission)
                elif submission is None:
                    part_report = await self._checked(str(part), report.provider, report.endpoint,
                                                      Workspace([folder]), backend)
                    upload = await self._upload_checked(part_report, on_progress, backend)
                    part_key = Fingerprint(part_report.sha256, report.provider, report.endpoint, metadata, backend,
                                           window)
                    await self._create(part_key, upload.file_id, path=part, group_id=group.group_id, claim=claim)
            view = await self._group_view(group.group_id)
        return SubmitResult(batch=view, reused_existing_job=reused, requests=report.requests,
                            warnings=[f"The file exceeds one batch's limits ({limits_text(limits)}), so it runs as "
                                      f"{len(parts)} batches in job group {group.group_id}; use that id with every "
                                      "batch tool."],
                            next_step="Call wait_for_batch with the group id.")

    async def _group_view(self, group_id: str) -> BatchView:
        group = self.store.get_group(group_id)
        if group is None:
            raise NotFoundError(f"No job group {group_id!r} is known to this server", status_code=404,
                                code="not_found")
        parts = []
        for submission in self.store.group_submissions(group_id):
            if submission.batch_id is None:
                continue
            part = await self.get(str(Ref(submission.backend, submission.batch_id)))
            upload = self.store.get_upload(str(Ref(submission.backend, submission.file_id)))
            if part.status == "failed" and not (part.counts and part.counts.total) and upload is not None:
                # refused before counting: its requests all failed, and the group's total must include them
                lines = upload.line_count
                part = part.model_copy(update={"counts": Counts(total=lines, failed=lines)})
            parts.append(part)
        view = BatchView.from_group(group_id, parts, group.parts)
        return view.model_copy(update={"parent_batch_id": group.parent_batch_id})

    def _recorded_parts(self, group_id: str) -> list[Job]:
        return [record.last_seen for s in self.store.group_submissions(group_id)
                if s.batch_id and (record := self.store.get_job(str(Ref(s.backend, s.batch_id))))]
