"""Resources (the jobs, as JSON), subscriptions to their changes, and prompts (the common workflows)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from mcp import MCPError
from mcp.server import MCPServer
from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError
from mcp.types import (
    INVALID_PARAMS,
    EmptyResult,
    SubscribeRequestParams,
    SubscriptionsListenRequestParams,
    UnsubscribeRequestParams,
)
from pydantic import Field

from batch_mcp.backends import base
from batch_mcp.schemas.jobs import JOBS_URI, RESULTS_URI
from batch_mcp.services.batches import BatchService
from batch_mcp.services.listing import JOBS_PAGE_SIZE, InvalidCursor
from batch_mcp.services.result_pages import CELL_CHARS, ROWS_PER_PAGE, NoResultsTable, results_page
from batch_mcp.store import StoreUnavailable
from batch_mcp.tools.arguments import unregistered
from batch_mcp.tools.context import AppState, TooManySubscriptions, connection_of, state_of
from batch_mcp.tools.describe import BACKENDS_URI, backends_json
from batch_mcp.tools.errors import explain


def register_resources(mcp: MCPServer, app_state: AppState) -> None:
    """``app_state`` serves the static resource, which (unlike templates) gets no Context."""

    async def page(service: BatchService, cursor: str | None) -> str:
        try:
            listed = await service.jobs_page(cursor)
        except InvalidCursor as exc:
            raise ResourceNotFoundError(str(exc)) from None
        except StoreUnavailable as exc:
            raise ResourceError(explain(exc)) from None
        return listed.model_dump_json(exclude_none=True)  # compact: no indentation, no empty fields

    @mcp.resource(JOBS_URI, name="jobs", title="Batch jobs", mime_type="application/json",
                  description=f"Every batch job and job group this server created (kept in its local job store, "
                              f"so they survive restarts), newest first, {JOBS_PAGE_SIZE} to a page, each in "
                              "brief (batch://jobs/{batch_id} has the full view); `next` is the URI of the next "
                              "page. The first page's statuses are refreshed from the API. Jobs made elsewhere "
                              "on the account: list_batches.")
    async def jobs() -> str:
        return await page(app_state.service, None)

    @mcp.resource(f"{JOBS_URI}{{?cursor}}", name="jobs_page", title="Batch jobs, a later page",
                  mime_type="application/json",
                  description="A later page of batch://jobs: follow the `next` URI of the page before.")
    async def jobs_after(ctx: Context[AppState, Any], cursor: str = "") -> str:
        return await page(state_of(ctx).service, cursor or None)

    @mcp.resource(f"{JOBS_URI}/{{batch_id}}", name="job", title="One batch job", mime_type="application/json",
                  description="One batch job: its live status from the API, and what this server recorded "
                              "(input file, request_id, downloaded result paths).")
    async def job(batch_id: str, ctx: Context[AppState, Any]) -> dict[str, Any]:
        try:
            return await state_of(ctx).service.job_detail(batch_id)
        except base.NotFoundError:
            raise ResourceNotFoundError(f"No batch job {batch_id!r}. Read batch://jobs for the known ids.") from None
        except (base.BackendError, StoreUnavailable) as exc:
            raise ResourceError(explain(exc)) from None


    @mcp.resource(f"{RESULTS_URI}/{{batch_id}}{{?cursor}}", name="results", title="A job's results table",
                  mime_type="application/json",
                  description=f"A downloaded job's merged results table, {ROWS_PER_PAGE} rows a page (cells over "
                              f"{CELL_CHARS:,} characters cut; the CSV and JSONL files have them whole); `next` is "
                              "the URI of the next page. download_batch_results links it.")
    async def results(batch_id: str, ctx: Context[AppState, Any], cursor: str = "") -> str:
        try:
            page = results_page(state_of(ctx).service.store, batch_id, cursor or None)
        except NoResultsTable as exc:
            raise ResourceNotFoundError(str(exc)) from None
        except StoreUnavailable as exc:
            raise ResourceError(explain(exc)) from None
        return page.model_dump_json(exclude_none=True)


def register_backends(mcp: MCPServer, app_state: AppState) -> None:
    """``batch://backends``: the facts tools and preflight use, so an agent can pick a backend before it submits."""

    @mcp.resource(BACKENDS_URI, name="backends", title="Batch backends", mime_type="application/json",
                  description="Every batch API this server knows: whether it is configured here (and which is the "
                              "default), line formats, endpoints, per-batch limits, completion windows, discount "
                              "(\"unknown\" where none is documented), metadata limits, upload style, how exactly-"
                              "once submission works, result retention, whether ended jobs can be deleted, and the "
                              "variables that configure it.")
    def backends() -> str:
        return backends_json(app_state.registry)


def register_subscriptions(mcp: MCPServer, app_state: AppState) -> None:
    """Serve 2025-era ``resources/subscribe``: only the URIs a session subscribed to send it updates, and the
    server says it supports them. (2026-07-28 clients use ``subscriptions/listen``, which the SDK serves.)"""

    async def subscribe(ctx: ServerRequestContext[Any, Any], params: SubscribeRequestParams) -> EmptyResult:
        uri = str(params.uri)
        if not _changes(uri):
            raise MCPError(code=INVALID_PARAMS, message=f"{uri[:200]!r} never changes here: subscribe to "
                                                        f"{JOBS_URI} or {JOBS_URI}/{{batch_id}}.")
        _refuse_others_jobs(app_state, [uri])
        try:
            app_state.subscribe(connection_of(ctx.session), uri)
        except TooManySubscriptions as exc:
            raise MCPError(code=INVALID_PARAMS, message=str(exc)) from None
        return EmptyResult()

    async def unsubscribe(ctx: ServerRequestContext[Any, Any], params: UnsubscribeRequestParams) -> EmptyResult:
        app_state.unsubscribe(connection_of(ctx.session), str(params.uri))
        return EmptyResult()

    lowlevel = mcp._lowlevel_server  # MCPServer has no public hook for these two 2025-era methods
    lowlevel.add_request_handler("resources/subscribe", SubscribeRequestParams, subscribe)
    lowlevel.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, unsubscribe)
    if app_state.hosting is not None and (served := lowlevel._request_handlers.get("subscriptions/listen")):
        listen = served.handler  # the SDK's ListenHandler: asked only for the caller's own jobs

        async def listen_to_own(ctx: ServerRequestContext[Any, Any], params: SubscriptionsListenRequestParams
                                ) -> Any:
            _refuse_others_jobs(app_state, params.notifications.resource_subscriptions or ())
            return await listen(ctx, params)

        lowlevel.add_request_handler("subscriptions/listen", SubscriptionsListenRequestParams, listen_to_own)


def _refuse_others_jobs(app_state: AppState, uris: Iterable[str]) -> None:
    """Hosted: another tenant's job id, even guessed, must not tell its caller when that job changes."""
    if app_state.hosting is None:
        return
    store = app_state.hosting.current().service.store
    for uri in uris:
        batch_id = uri.removeprefix(f"{JOBS_URI}/")
        if batch_id != uri and store.get_job(batch_id) is None:
            raise MCPError(code=INVALID_PARAMS, message=f"No batch job {batch_id[:200]!r} for your key here: "
                                                        "subscribe to the ids list_batches shows you.")


def _changes(uri: str) -> bool:
    """The resources whose content changes: the job list, and one job (batch://jobs/{batch_id})."""
    batch_id = uri.removeprefix(f"{JOBS_URI}/")
    return uri == JOBS_URI or (batch_id != uri and bool(batch_id) and not any(c in batch_id for c in "/?#"))


def register_prompts(mcp: MCPServer, *, hosted: bool = False) -> None:
    """The common workflows; run_batch walks a local file through the path tools, which hosted mode has not."""
    prompt = unregistered if hosted else mcp.prompt

    @prompt(name="run_batch", title="Run a batch over a file")
    def run_batch(
        path: str = Field(description="The JSONL request file."),
        goal: str = Field(default="", description="What the batch is for, to guide the summary."),
    ) -> str:
        """Validate, submit and wait for a batch file, then summarise its results."""
        if not path.strip():
            raise MCPError(code=INVALID_PARAMS, message="path must name a .jsonl file")
        purpose = f" The goal: {goal.strip()}." if goal.strip() else ""
        return (
            f"Run the requests in {path} as a batch job.{purpose}\n"
            "1. Call validate_batch_file on it. If it reports errors, explain them with their line numbers and "
            "stop; do not submit a file with errors. Warnings do not block: a file over one batch's limits "
            "(batches > 1) is fine, submit_batch runs it as one job group.\n"
            "2. Call submit_batch, then wait_for_batch with the batch_id it returns (a group-... id for a job "
            "group; every tool takes it) until it is terminal (call it again whenever it returns "
            "timed_out=true).\n"
            "3. Call download_batch_results, then summarise: how many requests succeeded and failed, the most "
            "common error codes, token usage, and a few representative outputs from the preview.\n"
            "4. Say where the result files were saved, and what to do about failed or missing requests."
        )

    @mcp.prompt(name="summarise_batch", title="Summarise a finished batch")
    def summarise_batch(batch_id: str = Field(description="The finished job's batch_id.")) -> str:
        """Fetch a finished batch's results and summarise them."""
        if not batch_id.strip():
            raise MCPError(code=INVALID_PARAMS, message="batch_id is required")
        return (
            f"Call download_batch_results for batch {batch_id}. Summarise the outcome: succeeded, failed and "
            "missing counts, the error codes with how often each occurred, token usage, and three example "
            "outputs. End with the paths of the saved files and a recommendation for any failed requests."
        )
