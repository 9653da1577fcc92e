"""Checks that never call the API: prepare a request file, estimate its cost."""

from __future__ import annotations

import anyio

from batch_mcp.schemas.jobs import (
    CostReport,
    PrepareResult,
)
from batch_mcp.schemas.preflight import PreflightReport
from batch_mcp.services.core import (
    ServiceCore,
)
from batch_mcp.services.prepare import PrepareError, RequestTemplate
from batch_mcp.services.prepare import prepare as prepare_requests
from batch_mcp.services.workspace import Workspace, sha256_of


class LocalChecks(ServiceCore):
    """Prepare and estimate; nothing leaves the machine."""

    async def prepare(self, source: str, template: RequestTemplate, output: str | None = None, *,
                      overwrite: bool = False, workspace: Workspace | None = None,
                      backend: str | None = None) -> PrepareResult:
        """Render records into a request file beside the source (or at ``output``), then validate it."""
        workspace = workspace or self.workspace
        src = workspace.input_file(source)
        target = workspace.output_file(output or src.with_name(f"{src.stem}.batch.jsonl"))
        if target == src:
            raise PrepareError("The output would replace the source file; pass another output path.")
        prepared = await anyio.to_thread.run_sync(lambda: prepare_requests(src, target, template,
                                                                           overwrite=overwrite))
        source_sha = await anyio.to_thread.run_sync(lambda: sha256_of(src))
        self.store.record_prepared(target, src, prepared.source_format, template.id_column, source_sha)
        endpoint = template.endpoint if template.provider == "openai" else None
        report = await self.validate(str(target), template.provider, endpoint, workspace, backend=backend)
        problems = [f"line {p.line}: {p.message}" if p.line else p.message for p in report.problems]
        return PrepareResult(
            path=str(target), source=str(src), records=prepared.records, columns=prepared.columns,
            skipped_blank=prepared.skipped_blank, example_prompt=prepared.example_prompt,
            example_line=prepared.example_line, valid=report.valid, problems=problems + prepared.warnings,
            estimated_cost=self.estimate(report),
            next_step=(f"Check example_prompt, then call submit_batch with path={target}." if report.valid else
                       "Fix the template or the records so the problems go away, then prepare again."),
        )

    async def estimate_cost(self, path: str, provider: str | None = None, endpoint: str | None = None,
                            workspace: Workspace | None = None, *, backend: str | None = None) -> CostReport:
        report = await self.validate(path, provider, endpoint, workspace, backend=backend)
        return self.estimate(report)

    def estimate(self, report: PreflightReport) -> CostReport:
        """Before submission: estimated input tokens, and max output tokens as the ceiling, per model."""
        usage = {model: (u.requests, u.input_tokens, u.max_output_tokens) for model, u in report.model_usage.items()}
        checked_for = report.backend.name if report.backend else self.backend_name(None)
        cost = self.prices.report(usage, estimated=True, backend=checked_for)
        caveats = [cost.note]
        if not report.valid:
            caveats.append(f"The file has {report.error_count:,} error(s), and requests that could not be read are "
                           "not counted: fix them (validate_batch_file lists them) for a full estimate.")
        if report.batches > 1:
            caveats.append(f"It covers all {report.batches} batches the file runs as (one job group).")
        return cost.model_copy(update={"note": " ".join(caveats)})
