"""The batch tools: thin MCP wiring over ``BatchService``. Descriptions are written for the model that calls them."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import Field

from batch_mcp.backends.registry import Registry
from batch_mcp.schemas.jobs import (
    BatchList,
    BatchView,
    CostReport,
    DeleteResult,
    DownloadSummary,
    PrepareResult,
    ResultLinksView,
    RetryResult,
    SubmitResult,
    UploadResult,
    WaitResult,
)
from batch_mcp.schemas.preflight import PreflightReport
from batch_mcp.services.prepare import RequestTemplate
from batch_mcp.services.waiting import QUICK_WAIT_S, WATCHED_WAIT_S
from batch_mcp.tools.arguments import (
    CREATES_REMOTE,
    READ_ONLY_LOCAL,
    READ_ONLY_REMOTE,
    ArgumentShapes,
    BatchId,
    EndpointArg,
    Metadata,
    NewJob,
    Path_,
    ProviderArg,
    Roots,
    metadata_dict,
    titled,
    unregistered,
)
from batch_mcp.tools.context import (
    AppState,
    asked_for_progress,
    progress_reporter,
    results_links,
    state_of,
    workspace_for,
)
from batch_mcp.tools.describe import limits_sentence
from batch_mcp.tools.errors import agent_errors
from batch_mcp.tools.hosted_tools import register_hosted_tools


def register_batch_tools(mcp: MCPServer, registry: Registry, *, hosted: bool = False) -> None:
    """Every batch tool; in hosted mode, those taking or writing paths on this machine give way to the links of
    tools/hosted_tools.py (a remote caller's paths mean nothing here)."""
    choosable = ArgumentShapes(registry)
    limits = limits_sentence(registry)
    local_tool = unregistered if hosted else mcp.tool

    @local_tool(
        **titled("Validate a batch file", READ_ONLY_LOCAL),
        description="Check a JSONL batch file locally before anything is uploaded: JSON on every line, unique "
                    "custom_id, the provider's line shape. Returns counts, the detected provider and endpoint, "
                    f"models, an input-token estimate and problems with line numbers. A file over {limits} is "
                    "still valid: `batches` says how many batches submit_batch runs it as, in one job group. "
                    "Nothing leaves the machine. Next: fix any errors (warnings do not block), then submit_batch.",
    )
    @choosable
    @agent_errors
    async def validate_batch_file(path: Path_, ctx: Context[AppState, Any], roots: Roots,
                                  provider: ProviderArg = None, endpoint: EndpointArg = None,
                                  backend: str | None = None) -> PreflightReport:
        state = state_of(ctx)
        return await state.service.validate(path, provider, endpoint, workspace_for(state, roots), backend=backend)

    @local_tool(
        **titled("Upload a batch file", CREATES_REMOTE),
        description="Validate a JSONL file, then upload it for a batch (an identical earlier upload is reused). "
                    "Returns the file_id for create_batch. Prefer submit_batch, which also creates the job and is "
                    "the only way to send a file over one batch's limits (it runs as a job group).",
    )
    @choosable
    @agent_errors
    async def upload_batch_file(path: Path_, ctx: Context[AppState, Any], roots: Roots,
                                provider: ProviderArg = None, endpoint: EndpointArg = None,
                                backend: str | None = None) -> UploadResult:
        state = state_of(ctx)
        return await state.service.upload(path, provider, endpoint, workspace=workspace_for(state, roots),
                                          on_progress=progress_reporter(ctx, "bytes uploaded"), backend=backend)

    @local_tool(
        **titled("Create a batch from an uploaded file", CREATES_REMOTE),
        description="Create a batch job from a file_id returned by upload_batch_file. Idempotent: calling it "
                    "again with the same arguments returns the same job (pass new=true for another). "
                    "Next: wait_for_batch.",
    )
    @choosable
    @agent_errors
    async def create_batch(
        file_id: Annotated[str, Field(min_length=1, max_length=128, description="From upload_batch_file.")],
        provider: str,
        ctx: Context[AppState, Any],
        endpoint: EndpointArg = None,
        metadata: Metadata = None,
        completion_window: Annotated[Literal["24h"], Field(description="Only 24h is offered.")] = "24h",
        new: NewJob = False,
    ) -> SubmitResult:
        if provider == "openai" and endpoint is None:
            raise ToolError("endpoint is required for openai lines: pass the url used on every line "
                            f"({' or '.join(choosable.endpoints)}).")
        return await state_of(ctx).service.create(file_id, provider, endpoint if provider == "openai" else None,
                                                  metadata_dict(metadata), new=new,
                                                  completion_window=completion_window)

    @local_tool(
        **titled("Submit a batch file", CREATES_REMOTE),
        description="The usual way to run a batch: validates the JSONL file, uploads it and creates the job in "
                    "one call. Submitting the same file with the same options again returns the existing job "
                    "instead of paying twice (unless it failed, was cancelled or expired, or new=true). "
                    "Next: wait_for_batch with the returned batch_id.",
    )
    @choosable
    @agent_errors
    async def submit_batch(path: Path_, ctx: Context[AppState, Any], roots: Roots, provider: ProviderArg = None,
                           endpoint: EndpointArg = None, metadata: Metadata = None,
                           new: NewJob = False, completion_window: str = "24h",
                           backend: str | None = None) -> SubmitResult:
        state = state_of(ctx)
        return await state.service.submit(path, provider, endpoint, metadata_dict(metadata), new=new,
                                          backend=backend, completion_window=completion_window,
                                          workspace=workspace_for(state, roots),
                                          on_progress=progress_reporter(ctx, "bytes uploaded"))

    @mcp.tool(
        **titled("Get a batch", READ_ONLY_REMOTE),
        description="Current status of a batch job: counts, percent done, timestamps, errors, whether results "
                    "are ready, and what to do next.",
    )
    @agent_errors
    async def get_batch(batch_id: BatchId, ctx: Context[AppState, Any]) -> BatchView:
        return await state_of(ctx).service.view(batch_id)

    @mcp.tool(
        **titled("Wait for a batch", READ_ONLY_REMOTE),
        description="Wait for a batch job to finish: checks at once, then polls with backoff. Returns within "
                    f"about {QUICK_WAIT_S:.0f} s (up to {WATCHED_WAIT_S:.0f} s when the client asked for progress, "
                    "sent every few seconds), or at timeout_s if given. timed_out=true is a normal answer: the "
                    "job keeps running; call again to keep waiting. Next: download_batch_results.",
    )
    @agent_errors
    async def wait_for_batch(
        batch_id: BatchId,
        ctx: Context[AppState, Any],
        timeout_s: Annotated[float | None, Field(gt=0, le=3600, description="Longest wait in seconds; give it "
                                                 "only if your client waits that long for a tool.")] = None,
        poll_interval_s: Annotated[float | None, Field(ge=0.05, le=600, description="First poll interval; "
                                                       "it grows while nothing changes.")] = None,
    ) -> WaitResult:
        watched = asked_for_progress(ctx)
        wait_s = timeout_s or (WATCHED_WAIT_S if watched else QUICK_WAIT_S)
        return await state_of(ctx).service.wait(batch_id, wait_s, poll_interval_s,
                                                on_progress=progress_reporter(ctx, "requests done") if watched
                                                else None)

    @mcp.tool(
        **titled("List batches", READ_ONLY_REMOTE),
        description="The account's batch jobs, newest first, optionally only those with one status. "
                    "Pass next_cursor back as cursor for the next page.",
    )
    @choosable
    @agent_errors
    async def list_batches(
        ctx: Context[AppState, Any],
        status: Annotated[Literal["validating", "in_progress", "finalizing", "completed", "failed", "expired",
                                  "cancelling", "cancelled"] | None,
                          Field(description="Only jobs with this status.")] = None,
        limit: Annotated[int, Field(ge=1, le=100, description="Jobs per page, 1-100.")] = 20,
        cursor: Annotated[str | None, Field(max_length=512, description="next_cursor of the previous page.")] = None,
        backend: str | None = None,
    ) -> BatchList:
        return await state_of(ctx).service.list(status, limit, cursor, backend=backend)

    @mcp.tool(
        **titled("Cancel a batch",
            ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=True)),
        description="Cancel a running batch job. Requests already finished are kept (and billed); the job goes "
                    "cancelling, then cancelled. Fails if the job already finished, or is still validating "
                    "(not yet handed to the provider: wait a moment and retry).",
    )
    @agent_errors
    async def cancel_batch(batch_id: BatchId, ctx: Context[AppState, Any]) -> BatchView:
        return await state_of(ctx).service.cancel(batch_id)

    if deleting := [caps.label for caps, configured in registry.capabilities() if configured and caps.deletes]:
        @mcp.tool(
            **titled("Delete an ended batch", ToolAnnotations(read_only_hint=False, destructive_hint=True,
                                                               idempotent_hint=True, open_world_hint=True)),
            description=f"Delete an ended batch job for good at the provider ({', '.join(deleting)} only), its "
                        "results with it: download_batch_results first if you need them. A job still running is "
                        "refused (cancel_batch, then wait_for_batch until it ends). Result files already "
                        "downloaded stay on disk and the job stays listed here; calling again is harmless.",
        )
        @agent_errors
        async def delete_batch(batch_id: BatchId, ctx: Context[AppState, Any]) -> DeleteResult:
            return await state_of(ctx).service.delete(batch_id)

    @mcp.tool(
        **titled("Get batch result links", READ_ONLY_REMOTE),
        description="Short-lived presigned URLs of a finished job's results and errors files. Most agents "
                    "want download_batch_results instead, which saves and summarises them.",
    )
    @agent_errors
    async def get_batch_results(batch_id: BatchId, ctx: Context[AppState, Any]) -> ResultLinksView:
        return await state_of(ctx).service.result_links(batch_id)

    @local_tool(
        **titled("Download batch results",
            ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=True)),
        description="Save a finished job's results and errors files into an allowed folder (default "
                    "./batch-results) and summarise them: succeeded/failed/missing counts, error codes, token "
                    "usage and a preview; the whole table is linked as the resource batch://results/{batch_id}, "
                    "read in pages. Never overwrites unless overwrite=true.",
    )
    @agent_errors(links=results_links)
    async def download_batch_results(
        batch_id: BatchId,
        ctx: Context[AppState, Any],
        roots: Roots,
        dest_dir: Annotated[str | None, Field(max_length=4096, description="Folder to write into "
                                              "(inside the allowed folders).")] = None,
        overwrite: Annotated[bool, Field(description="Replace result files already there.")] = False,
    ) -> DownloadSummary:
        state = state_of(ctx)
        return await state.service.download(batch_id, dest_dir, overwrite=overwrite,
                                            workspace=workspace_for(state, roots),
                                            on_progress=progress_reporter(ctx, "bytes downloaded"))

    @local_tool(
        **titled("Prepare a batch file from data",
            ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=False)),
        description="Turn records into a batch request file: a CSV (header row), JSONL (one object per line) or "
                    "plain-text file (one record per line, column `text`) plus a prompt template with {column} "
                    "placeholders. Writes <source>.batch.jsonl beside the source (or `output`), validates it and "
                    "returns a rendered example and a cost estimate. Next: submit_batch with the returned path. "
                    "Results of such a file come back joined with the original records' columns.",
    )
    @choosable
    @agent_errors
    async def prepare_batch_file(
        source: Annotated[str, Field(min_length=1, max_length=4096, description="The CSV, JSONL or text file.")],
        prompt: Annotated[str, Field(min_length=1, max_length=100_000, description="Template for each request, "
                                     "e.g. 'Summarise this review in one sentence: {review}'.")],
        model: Annotated[str, Field(min_length=1, max_length=200, description="Model for every request.")],
        ctx: Context[AppState, Any],
        roots: Roots,
        provider: str = "openai",
        endpoint: str = "/v1/chat/completions",
        system: Annotated[str | None, Field(max_length=100_000, description="Optional system prompt "
                                            "(may use {column} too).")] = None,
        max_tokens: Annotated[int | None, Field(ge=1, le=1_000_000, description="Output token limit per request "
                                                "(anthropic default 1024).")] = None,
        temperature: Annotated[float | None, Field(ge=0, le=2, description="Sampling temperature.")] = None,
        id_column: Annotated[str | None, Field(max_length=200, description="Column whose values become "
                                               "custom_id (unique); default: row-1, row-2, ...")] = None,
        output: Annotated[str | None, Field(max_length=4096, description="Where to write the JSONL.")] = None,
        overwrite: Annotated[bool, Field(description="Replace an existing output file.")] = False,
        backend: str | None = None,
    ) -> PrepareResult:
        state = state_of(ctx)
        template = RequestTemplate(prompt=prompt, model=model, provider=provider, endpoint=endpoint, system=system,
                                   max_tokens=max_tokens, temperature=temperature, id_column=id_column)
        return await state.service.prepare(source, template, output, overwrite=overwrite,
                                           workspace=workspace_for(state, roots), backend=backend)

    @local_tool(
        **titled("Estimate a batch's cost", READ_ONLY_LOCAL),
        description="Estimate what a batch file will cost at batch prices, per model: input tokens estimated "
                    "from the prompts, output tokens at most each request's max_tokens. Prices come from a dated "
                    "table; a model it does not know is reported as unknown, not priced at zero.",
    )
    @choosable
    @agent_errors
    async def estimate_batch_cost(path: Path_, ctx: Context[AppState, Any], roots: Roots,
                                  provider: ProviderArg = None, endpoint: EndpointArg = None,
                                  backend: str | None = None) -> CostReport:
        state = state_of(ctx)
        return await state.service.estimate_cost(path, provider, endpoint, workspace_for(state, roots),
                                                 backend=backend)

    @mcp.tool(
        **titled("Retry failed requests",
            ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True)),
        description="For a finished job (or job group): put the original requests that failed, expired, were "
                    "cancelled or have no result into a new file and submit it as a new job linked to this one. "
                    "Downloading the new job's results merges both, preferring the newest success. Call it on "
                    "the newest retry to converge on a complete result set.",
    )
    @agent_errors
    async def retry_failed_requests(batch_id: BatchId, ctx: Context[AppState, Any], roots: Roots) -> RetryResult:
        state = state_of(ctx)
        return await state.service.retry_failed(batch_id, workspace=workspace_for(state, roots),
                                                on_progress=progress_reporter(ctx, "bytes uploaded"))

    if hosted:
        register_hosted_tools(mcp, choosable)
