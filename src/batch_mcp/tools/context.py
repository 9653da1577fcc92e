"""What every tool, resource and prompt gets from the server's lifespan, and how it tells clients of changes."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
from mcp.server.connection import Connection
from mcp.server.mcpserver import Context, ListRoots
from mcp.server.session import ServerSession
from mcp.server.subscriptions import ResourceUpdated, SubscriptionBus
from mcp.types import ListRootsResult, ResourceLink

from batch_mcp.backends.registry import Registry
from batch_mcp.domain import Job, Progress
from batch_mcp.schemas.jobs import JOBS_URI
from batch_mcp.services.batches import BatchService
from batch_mcp.services.links import Links
from batch_mcp.services.result_pages import ROWS_PER_PAGE, results_uri
from batch_mcp.services.workspace import Workspace, local_file_uri

log = logging.getLogger(__name__)
MAX_SUBSCRIPTIONS = 1_000  # per connection: enough for every running job, and a bound on what a client can pin
_NOTIFY_TIMEOUT_S = 1.0  # a client that stopped reading must not hold up the call that saw the change


class TooManySubscriptions(Exception):
    """A connection asked for more subscriptions than :data:`MAX_SUBSCRIPTIONS`."""


class TenantView(Protocol):
    """Hosted mode: who sent the request (an account per backend it sent a key for), and its own service."""

    accounts: dict[str, str]
    service: BatchService
    origin: str


class Tenants(Protocol):
    links: Links

    def current(self) -> TenantView: ...


@dataclass
class AppState:
    #: The service of a local server; a hosted one serves each request with its caller's (``service``).
    base: BatchService
    bus: SubscriptionBus
    #: Every configured backend, and the default one; ``batch://backends`` and INSTRUCTIONS describe it. Hosted,
    #: the backends a caller may send a key for.
    registry: Registry
    #: 2025-era ``resources/subscribe``: the URIs each connection asked for. (2026-07-28 clients listen on the bus.)
    subscriptions: dict[Connection, set[str]] = field(default_factory=dict)
    #: Hosted mode's tenants (``batch_mcp.hosted``); None on a local server.
    hosting: Tenants | None = None

    @property
    def service(self) -> BatchService:
        """The service of this request: the caller's own in hosted mode."""
        return self.base if self.hosting is None else self.hosting.current().service

    def tenant(self) -> TenantView:
        if self.hosting is None:
            raise RuntimeError("a hosted tool was called on a local server")
        return self.hosting.current()

    def links(self) -> Links:
        if self.hosting is None:
            raise RuntimeError("a hosted tool was called on a local server")
        return self.hosting.links

    def subscribe(self, connection: Connection, uri: str) -> None:
        uris = self.subscriptions.get(connection)
        if uris is None:
            uris = self.subscriptions[connection] = set()
            connection.exit_stack.callback(self.subscriptions.pop, connection, None)  # forgotten once it closes
        if uri not in uris and len(uris) >= MAX_SUBSCRIPTIONS:
            raise TooManySubscriptions(f"This connection already has {MAX_SUBSCRIPTIONS:,} subscriptions; "
                                       "unsubscribe from finished jobs first.")
        uris.add(uri)

    def unsubscribe(self, connection: Connection, uri: str) -> None:
        self.subscriptions.get(connection, set()).discard(uri)

    async def announce(self, job: Job) -> None:
        """A job changed status, and so did the job list: tell whoever subscribed to either, in both eras."""
        for uri in (job_uri(job.ref), JOBS_URI):
            await self.bus.publish(ResourceUpdated(uri=uri))
            for connection, uris in list(self.subscriptions.items()):
                if uri in uris:
                    await self._send_updated(connection, uri)

    async def _send_updated(self, connection: Connection, uri: str) -> None:
        with anyio.move_on_after(_NOTIFY_TIMEOUT_S):
            try:
                await connection.send_resource_updated(uri)
            except Exception as exc:  # whatever a vanished transport raises: forget it, serve on
                log.debug("dropping the subscriptions of a connection that cannot be notified: %s", exc)
                self.subscriptions.pop(connection, None)


def connection_of(session: ServerSession) -> Connection:
    """The connection a request came on, whose lifetime a subscription shares. mcp 2.3 hands handlers only a
    per-request proxy, with no public way to it (private attribute, like ``MCPServer._lowlevel_server``)."""
    return session._connection


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


def results_links(summary: Any) -> list[ResourceLink]:
    """The merged table as a resource to read in pages, rather than rows inlined into the answer."""
    return [ResourceLink(type="resource_link", uri=results_uri(summary.batch_id), name="results_table",
                         title=f"Results of {summary.batch_id}", mime_type="application/json",
                         description=f"The merged results table, {ROWS_PER_PAGE} rows a page; follow `next`.")]


def job_uri(batch_id: str) -> str:
    return f"{JOBS_URI}/{batch_id}"


def state_of(ctx: Context[Any, Any]) -> AppState:
    return ctx.request_context.lifespan_context


def asked_for_progress(ctx: Context[Any, Any]) -> bool:
    """Whether the client listens for this call's progress (and so may extend its timeout on it). mcp 2.3 keeps
    that on the request's dispatch channel with no public accessor: the caller's token over JSON-RPC, its
    callback in process (private attributes, like ``connection_of``)."""
    if (ctx.request_context.meta or {}).get("progress_token") is not None:
        return True
    channel = getattr(ctx.request_context.session, "_request_outbound", None)
    while channel is not None:  # the runner may wrap the dispatcher's channel in its own
        if any(getattr(channel, name, None) is not None for name in ("_progress_token", "_on_progress")):
            return True
        channel = getattr(channel, "_inner", None)
    return False


def progress_reporter(ctx: Context[Any, Any], unit: str) -> Progress:
    """A progress callback that forwards to the client (a no-op when it asked for none)."""

    async def report(done: int, total: int) -> None:
        await ctx.report_progress(done, total or None, f"{done} of {total} {unit}" if total else f"{done} {unit}")

    return report
