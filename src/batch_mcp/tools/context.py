"""What every tool, resource and prompt gets from the server's lifespan, and how it tells clients of changes."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from mcp.server.mcpserver import Context, ListRoots
from mcp.server.subscriptions import ResourcesListChanged, ResourceUpdated, SubscriptionBus
from mcp.types import ListRootsResult

from batch_mcp.client import Progress
from batch_mcp.schemas import Batch
from batch_mcp.services.batches import BatchService
from batch_mcp.services.workspace import Workspace, local_file_uri

MODERN_PROTOCOL = "2026-07-28"
JOBS_URI = "batch://jobs"

#: The tool call in progress, so a status change seen while serving it can reach a 2025-era session.
current_call: ContextVar[Context[Any, Any] | None] = ContextVar("current_call", default=None)


@dataclass
class AppState:
    service: BatchService
    bus: SubscriptionBus

    async def announce(self, batch: Batch) -> None:
        """A job changed status: notify 2026-07-28 listeners on the bus, and the calling 2025-era session."""
        uri = job_uri(batch.batch_id)
        await self.bus.publish(ResourceUpdated(uri=uri))
        await self.bus.publish(ResourcesListChanged())
        ctx = current_call.get()
        if ctx is not None and ctx.protocol_version != MODERN_PROTOCOL:
            await ctx.session.send_resource_updated(uri)
            await ctx.session.send_resource_updated(JOBS_URI)


def client_roots(ctx: Context[Any, Any]) -> ListRoots | ListRootsResult:
    """Ask for the client's roots only over a local pipe (stdio, in memory), and only when it offers them
    (asking a client without the capability fails). Over HTTP any local process may be the client, so
    what it claims as its roots counts for nothing."""
    if ctx.request_context.request is not None:  # the transport attached an HTTP request
        return ListRootsResult(roots=[])
    capabilities = ctx.client_capabilities
    return ListRoots() if capabilities is not None and capabilities.roots is not None else ListRootsResult(roots=[])


def workspace_for(state: AppState, roots: ListRootsResult) -> Workspace:
    """The allowed folders, narrowed to the client's ``file://`` roots that meet them."""
    folders = [local_file_uri(str(root.uri)) for root in roots.roots if str(root.uri).startswith("file:")]
    return state.service.workspace.narrowed_to(folder for folder in folders if folder is not None)


def job_uri(batch_id: str) -> str:
    return f"{JOBS_URI}/{batch_id}"


def state_of(ctx: Context[Any, Any]) -> AppState:
    current_call.set(ctx)
    return ctx.request_context.lifespan_context


def progress_reporter(ctx: Context[Any, Any], unit: str) -> Progress:
    """A progress callback that forwards to the client (a no-op when it asked for none)."""

    async def report(done: int, total: int) -> None:
        await ctx.report_progress(done, total or None, f"{done} of {total} {unit}" if total else f"{done} {unit}")

    return report
