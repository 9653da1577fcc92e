"""The batch tools: thin MCP wiring over ``BatchService``. Descriptions are written for the model that calls them."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

from mcp.server import MCPServer
from mcp.server.mcpserver import Context, Resolve
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ListRootsResult, ToolAnnotations
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from batch_mcp.backends.registry import CATALOG, Registry
from batch_mcp.schemas.jobs import (
    BatchList,
    BatchView,
    CostReport,
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
from batch_mcp.tools.context import AppState, client_roots, progress_reporter, state_of, workspace_for
from batch_mcp.tools.describe import discount_text, limits_sentence, limits_text
from batch_mcp.tools.errors import agent_errors

MAX_METADATA_KEYS = 16
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 512
METADATA_EXAMPLE = '[{"key": "project", "value": "triage"}]'


# Labels come as a list of pairs, not as an object with free-form keys: strict tool calling (OpenAI's,
# openai-agents' strict mode) accepts no such object. The service and the backends keep a dict.
class MetadataPair(BaseModel):
    """One label of the job."""

    model_config = ConfigDict(extra="forbid")

    key: Annotated[str, Field(strict=True, min_length=1, max_length=MAX_METADATA_KEY_CHARS)]
    value: Annotated[str, Field(strict=True, max_length=MAX_METADATA_VALUE_CHARS)]


#: Spelled out in place rather than as a ``$ref``: openai-agents' strict mode refuses references in a tool schema.
MetadataItem = Annotated[MetadataPair, WithJsonSchema(MetadataPair.model_json_schema())]


def _pairs_not_an_object(given: Any) -> Any:
    if isinstance(given, dict):
        raise ValueError(f"metadata is a list of key/value pairs, e.g. {METADATA_EXAMPLE}, not an object")
    return given


def _unique_keys(pairs: list[MetadataPair] | None) -> list[MetadataPair] | None:
    keys = [pair.key for pair in pairs or ()]
    if twice := next((key for key in keys if keys.count(key) > 1), None):
        raise ValueError(f"metadata key {twice!r} is given more than once; give each key once")
    return pairs


def metadata_dict(pairs: list[MetadataPair] | None) -> dict[str, str] | None:
    """The labels as the service and the backends take them."""
    return None if pairs is None else {pair.key: pair.value for pair in pairs}


Path_ = Annotated[str, Field(min_length=1, max_length=4096,
                             description="Path of the .jsonl file; relative paths start at the first allowed folder.")]
#: Line format and endpoint: ArgumentShapes offers what the configured backends accept.
ProviderArg = str | None
EndpointArg = str | None
BatchId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$",
                               description="The batch_id returned by submit_batch, create_batch or list_batches "
                                           "(or a job group's id, group-...).")]
Metadata = Annotated[
    Annotated[list[MetadataItem], Field(max_length=MAX_METADATA_KEYS)] | None,
    BeforeValidator(_pairs_not_an_object),
    AfterValidator(_unique_keys),
    Field(description=f"Optional labels for the job as key/value pairs, e.g. {METADATA_EXAMPLE}: at most "
                      f"{MAX_METADATA_KEYS}, each key once (1-{MAX_METADATA_KEY_CHARS} characters), values up to "
                      f"{MAX_METADATA_VALUE_CHARS} characters. get_batch shows them as an object."),
]
Roots = Annotated[ListRootsResult, Resolve(client_roots)]
NewJob = Annotated[bool, Field(description="Force a new job even if this exact submission already made one.")]

def titled(title: str, annotations: ToolAnnotations) -> dict[str, Any]:
    """The tool's title, also as its annotation title: some clients (langchain's) read only the latter."""
    return {"title": title, "annotations": annotations.model_copy(update={"title": title})}


READ_ONLY_LOCAL = ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False)
READ_ONLY_REMOTE = ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=True)
CREATES_REMOTE = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True,
                                 open_world_hint=True)


Tool = TypeVar("Tool", bound=Callable[..., Any])
#: A completion window as the backends write them: ``24h``, ``48h``, ``7d``.
WINDOW_PATTERN = r"^[1-9][0-9]{0,3}[hd]$"


class ArgumentShapes:
    """Tool arguments shaped from the configured backends (the default one when none is): a choice offers what
    one of them accepts, and an argument with a single possible value is not offered at all. With DigitalOcean
    alone, every schema stays as it always was."""

    def __init__(self, registry: Registry) -> None:
        self.names = registry.names
        shown = [CATALOG[name].capabilities for name in registry.names or (registry.default,)]
        self.formats = tuple(dict.fromkeys(f for caps in shown for f in caps.line_formats))
        self.endpoints = tuple(dict.fromkeys(e for caps in shown for e in caps.endpoints))
        self.windows = "; ".join(f"{caps.name}: {caps.windows}" for caps in shown)
        self.one_window = all(str(caps.windows) == "24h" for caps in shown)
        facts = "; ".join(f"{name} ({limits_text(CATALOG[name].capabilities)}, "
                          f"{discount_text(CATALOG[name].capabilities)})" for name in self.names)
        self._backend: Any = Annotated[Literal[self.names] | None,  # type: ignore[valid-type]
                                       Field(description=f"Which backend runs it: {facts}. "
                                                         f"Default: {registry.default}.")]

    def _annotation(self, param: inspect.Parameter) -> Any:
        formats: Any = Literal[self.formats]  # type: ignore[valid-type]
        endpoints: Any = Literal[self.endpoints]  # type: ignore[valid-type]
        optional = param.default is None
        if param.name == "provider":
            said = " or ".join(self.formats)
            return Annotated[formats | None if optional else formats,
                             Field(description=f"{said}; detected from the lines when omitted." if optional
                                   else f"{said}.")]
        if param.name == "endpoint":
            return Annotated[endpoints | None if optional else endpoints,
                             Field(description="openai only: the endpoint every line's url uses; detected when "
                                               "omitted." if optional else "openai only.")]
        if param.name == "completion_window" and not self.one_window:
            return Annotated[str, Field(pattern=WINDOW_PATTERN, description="How long the backend may take to "
                                        f"finish, as 24h or 7d ({self.windows}). Default 24h.")]
        return param.annotation

    def __call__(self, tool: Tool) -> Tool:
        signature = inspect.signature(tool, eval_str=True)
        params = []
        for param in signature.parameters.values():
            if param.name == "backend" and len(self.names) < 2:
                continue
            if param.name == "completion_window" and self.one_window and param.annotation is str:
                continue  # offered where there is a choice; create_batch has always shown its one value
            annotation = self._backend if param.name == "backend" else self._annotation(param)
            params.append(param.replace(annotation=annotation))
        tool.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
        return tool


def register_batch_tools(mcp: MCPServer, registry: Registry) -> None:
    choosable = ArgumentShapes(registry)
    limits = limits_sentence(registry)

    @mcp.tool(
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

    @mcp.tool(
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

    @mcp.tool(
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

    @mcp.tool(
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
        description="Wait until a batch job finishes or the timeout passes, polling with backoff and sending "
                    "progress (requests done of total). A timeout is a normal answer (timed_out=true): the job "
                    "keeps running; call again to keep waiting. Next: download_batch_results.",
    )
    @agent_errors
    async def wait_for_batch(
        batch_id: BatchId,
        ctx: Context[AppState, Any],
        timeout_s: Annotated[float, Field(gt=0, le=3600, description="Longest wait in seconds. The default "
                                          "stays under the 60 s request timeout many MCP clients use; call "
                                          "again to keep waiting.")] = 50,
        poll_interval_s: Annotated[float | None, Field(ge=0.05, le=600, description="First poll interval; "
                                                       "it grows while nothing changes.")] = None,
    ) -> WaitResult:
        return await state_of(ctx).service.wait(batch_id, timeout_s, poll_interval_s,
                                                on_progress=progress_reporter(ctx, "requests done"))

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

    @mcp.tool(
        **titled("Get batch result links", READ_ONLY_REMOTE),
        description="Short-lived presigned URLs of a finished job's results and errors files. Most agents "
                    "want download_batch_results instead, which saves and summarises them.",
    )
    @agent_errors
    async def get_batch_results(batch_id: BatchId, ctx: Context[AppState, Any]) -> ResultLinksView:
        return await state_of(ctx).service.result_links(batch_id)

    @mcp.tool(
        **titled("Download batch results",
            ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=True)),
        description="Save a finished job's results and errors files into an allowed folder (default "
                    "./batch-results) and summarise them: succeeded/failed/missing counts, error codes, token "
                    "usage and a preview. Never overwrites unless overwrite=true.",
    )
    @agent_errors
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

    @mcp.tool(
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

    @mcp.tool(
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
