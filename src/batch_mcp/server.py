"""The MCP server: wires the batch service into tools, resources and prompts, and runs a transport.

Process-wide resources (the API client, the job store, the embedded sandbox) are opened once by
:func:`open_app_state`, outside the MCP lifespan, because the SSE transport runs a lifespan per
connection and a job store or sandbox must not be per connection.
"""

from __future__ import annotations

import functools
import hmac
import logging
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import anyio
from mcp.server import MCPServer
from mcp.server.auth.provider import TokenVerifier
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.subscriptions import InMemorySubscriptionBus
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import Tool as MCPTool
from pydantic import ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from batch_mcp import __version__
from batch_mcp.backends import digitalocean
from batch_mcp.backends.http import HttpOptions
from batch_mcp.backends.registry import CATALOG, FALLBACK_BACKEND, Registry
from batch_mcp.backends.retries import RetryPolicy as BackendRetryPolicy
from batch_mcp.backends.settings import BackendSettings, settings_for
from batch_mcp.config import MIN_PUBLIC_AUTH_TOKEN, Settings, is_loopback
from batch_mcp.hosted.oauth import oauth_of
from batch_mcp.hosted.routes import register_link_routes
from batch_mcp.hosted.tenants import Endpoint, Hosting
from batch_mcp.services.batches import BatchService
from batch_mcp.services.links import Links
from batch_mcp.services.workspace import Workspace
from batch_mcp.store import JobStore, StoreUnavailable
from batch_mcp.tools import register_all
from batch_mcp.tools.context import AppState
from batch_mcp.tools.describe import instructions
from batch_mcp.tools.errors import invalid_arguments, unknown_arguments
from batch_mcp.tools.hosted_tools import DOWNLOADS_PATH, UPLOADS_PATH
from batch_mcp.tools.output_schemas import lean_tools

log = logging.getLogger(__name__)
#: How soon a replica listens again for the others' job changes after its database was unreachable.
_RELAY_RETRY_S = 5.0
#: The lease on the periodic resume sweep: one replica on a store sweeps at a time.
RESUME_LEASE = "resume-pending"
#: The lease on looking at running jobs for subscribers: one replica polls them, its changes reach all.
WATCH_LEASE = "watch-jobs"
Transport = Literal["stdio", "streamable-http", "sse"]
_DO = digitalocean.CAPABILITIES


def backend_settings(settings: Settings) -> dict[str, BackendSettings]:
    """Each backend's key and base URL from its own variables; DigitalOcean's from ``settings`` (flags win)."""
    read = {name: settings_for(entry.capabilities)() for name, entry in CATALOG.items() if name != _DO.name}
    return {_DO.name: settings_for(_DO).given(settings.token_value(), settings.base_url), **read}


def hosted_endpoints(settings: Settings, every: dict[str, BackendSettings]) -> dict[str, Endpoint]:
    """Where each backend's API is for hosted callers: the configured base URLs, with the caller's key; on the
    sandbox, its emulators with their own tokens. The server's own keys are never used for a caller."""
    if not settings.sandbox and (ignored := [name for name, read in every.items() if read.api_key_value()]):
        log.warning("hosted mode: ignoring the server's own keys for %s; each caller sends its own",
                    ", ".join(ignored))
    return {name: Endpoint(read.base_url, read.api_key_value() if settings.sandbox else None)
            for name, read in every.items()}


def start_sandboxes(stack: AsyncExitStack, folder: Path) -> dict[str, BackendSettings]:
    """One emulator per backend, each backend configured against its own (real keys are never used here).

    Each keeps its account in ``folder/<backend>``, which outlives the process, and starts on its first call.
    """
    from batch_mcp.sandbox import SandboxConfig, SandboxServer

    configured = {}
    for name, entry in CATALOG.items():
        config = SandboxConfig(backend=name, storage_dir=folder / name)  # type: ignore[arg-type]
        sandbox = stack.enter_context(SandboxServer(config, on_demand=True))
        configured[name] = settings_for(entry.capabilities).given(sandbox.token, sandbox.base_url)
        log.info("sandbox mode: %s emulated at %s", entry.capabilities.label, sandbox.base_url)
    return configured


@asynccontextmanager
async def open_app_state(settings: Settings) -> AsyncIterator[AppState]:
    """Open the backends, job store and (with ``settings.sandbox``) one emulator per backend, for the process."""
    async with AsyncExitStack() as stack:
        state_dir = settings.state_dir
        if settings.sandbox:
            # the sandbox's jobs, and the store that records them, outlive the process (an MCP client may start
            # one per tool call) apart from the real store: state_dir/sandbox is shared by every sandbox run
            state_dir = settings.state_dir / "sandbox"
            every = start_sandboxes(stack, state_dir)
        else:
            every = backend_settings(settings)
        options = HttpOptions(retry=BackendRetryPolicy(max_attempts=settings.max_attempts,
                                                       base_delay_s=settings.retry_base_delay_s),
                              timeout_s=settings.timeout_s)
        if settings.hosted:  # no backend of its own: each call opens its caller's (hosted/tenants.py)
            registry = Registry({}, default=settings.backend or FALLBACK_BACKEND, configured=tuple(CATALOG))
        else:
            registry = Registry.open(options, default=settings.backend, settings=every)
        stack.push_async_callback(registry.aclose)
        if not registry.configured:
            log.warning("no backend configured: set %s (tools will say so)",
                        "; ".join(" or ".join(entry.capabilities.token_env) for entry in CATALOG.values()))
        store = stack.enter_context(JobStore.at(state_dir, settings.store_url_value(),
                                                 claim_lease=timedelta(seconds=settings.claim_lease_s)))
        try:
            store.check()
        except StoreUnavailable as exc:  # start anyway: every tool that needs the store answers with this
            log.error("%s", exc)
        service = BatchService(
            registry=registry,
            store=store,
            workspace=Workspace(settings.effective_allowed_dirs()),
            max_requests=settings.max_requests, max_bytes=settings.max_bytes,
            default_poll_interval_s=settings.poll_interval_s,
        )
        hosting = None
        if settings.hosted:
            secret = settings.account_secret_value()
            hosting = Hosting(service, Links(secret, state_dir / "hosted", settings.link_ttl_s), secret=secret,
                              options=options,
                              endpoints=hosted_endpoints(settings, every), default=settings.backend,
                              public_url=settings.public_url, max_upload_bytes=settings.max_upload_bytes)
        state = AppState(base=service, bus=InMemorySubscriptionBus(), registry=registry, hosting=hosting)
        service.status_listeners.append(state.announce)
        async with anyio.create_task_group() as background:
            if registry.names:  # in the background: a slow or unreachable API must not delay the handshake
                # at start unleased (a crash just before must not wait for its own stale lease), then leased
                background.start_soon(functools.partial(_leased_every, store, RESUME_LEASE, settings.resume_interval_s,
                                                        lambda: _resume_once(service), first_unleased=True))
                background.start_soon(_leased_every, store, WATCH_LEASE, settings.watch_interval_s,
                                      service.refresh_active)
            if store.database.dialect == "postgresql":
                background.start_soon(_relay, store, state)
            yield state
            background.cancel_scope.cancel()


async def _leased_every(store: JobStore, lease: str, interval_s: float, work: Callable[[], Awaitable[object]], *,
                        first_unleased: bool = False) -> None:
    """Do ``work`` every ``interval_s`` while the server runs (at once too with ``first_unleased``), under
    ``lease``: of many replicas (or IDE windows) on one store one does it at a time, and another takes over
    once the holder stops renewing (3 intervals)."""
    holder, ttl = uuid.uuid4().hex, timedelta(seconds=3 * interval_s)
    first = first_unleased
    while True:
        if not first:
            await anyio.sleep(interval_s)
        try:
            if first or store.take_lease(lease, holder, ttl):
                await work()
        except StoreUnavailable as exc:  # logged at startup; the tools explain it; the next round tries again
            log.debug("%s skipped: %s", lease, exc)
        except Exception:  # a background round must never take the server down; the next one tries again
            log.warning("%s failed; trying again in %.0f s", lease, interval_s, exc_info=True)
        first = False


async def _resume_once(service: BatchService) -> None:
    """Settle the creates whose answer was lost (each resend claimed: exactly once either way), so a replica
    that died mid-submit has its job made by another without an agent asking again."""
    resumed = await service.resume_pending()
    if resumed:
        log.info("resumed %d submission(s) whose answer was lost", len(resumed))


async def _relay(store: JobStore, state: AppState) -> None:
    """Replicas: this one's subscribers hear of the status changes the others make (PostgreSQL NOTIFY), from
    a thread that listens until the server stops (and listens again after the database was unreachable)."""
    stop = threading.Event()

    def listen() -> None:
        for record in store.status_changes_elsewhere(stop):
            anyio.from_thread.run(state.announce, record.last_seen)

    try:
        while True:
            try:
                await anyio.to_thread.run_sync(listen, abandon_on_cancel=True)
            except StoreUnavailable as exc:
                log.warning("not hearing other replicas' job changes for now: %s", exc)
            await anyio.sleep(_RELAY_RETRY_S)
    finally:
        stop.set()


class BatchMCPServer(MCPServer):
    """MCPServer whose argument errors read as instructions rather than as a pydantic report, which
    refuses arguments a tool does not take (the SDK drops them silently, so a misspelt option would be
    ignored), and whose tools list lean output schemas (tools/output_schemas.py)."""

    _listed: tuple[tuple[str, ...], list[MCPTool]] | None = None

    async def list_tools(self) -> list[MCPTool]:
        derived = await super().list_tools()
        names = tuple(tool.name for tool in derived)
        if self._listed is None or self._listed[0] != names:  # the tools are registered once, before serving
            self._listed = (names, lean_tools(derived))
        return self._listed[1]

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
        accepted = next((list(tool.input_schema.get("properties", {})) for tool in await self.list_tools()
                         if tool.name == name), None)
        if accepted is not None and (unknown := sorted(set(arguments) - set(accepted))):
            raise ToolError(unknown_arguments(name, unknown, accepted))
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            if isinstance(exc.__cause__, ValidationError):
                raise ToolError(invalid_arguments(name, exc.__cause__)) from exc.__cause__
            raise


def build_server(state: AppState, oauth: tuple[TokenVerifier, AuthSettings] | None = None) -> MCPServer:
    """The MCP server over ``state``; with ``oauth``, an OAuth resource server that checks every bearer token."""
    @asynccontextmanager
    async def lifespan(_: MCPServer) -> AsyncIterator[AppState]:
        yield state

    hosting = state.hosting if isinstance(state.hosting, Hosting) else None
    mcp = BatchMCPServer("batch-mcp", version=__version__, lifespan=lifespan, subscriptions=state.bus,
                         instructions=instructions(state.registry, hosted=hosting is not None),
                         middleware=[hosting.middleware] if hosting else [],
                         **({"token_verifier": oauth[0], "auth": oauth[1]} if oauth else {}))
    register_all(mcp, state)
    if hosting:
        register_link_routes(mcp, hosting)
    return mcp


class BearerAuth:
    """Require ``Authorization: Bearer <token>`` on every HTTP request (compared in constant time), except under
    ``exempt`` paths (hosted mode's links, which are credentials of their own)."""

    def __init__(self, app: ASGIApp, token: str, exempt: tuple[str, ...] = ()) -> None:
        self.app = app
        self.token = token.encode()
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not str(scope.get("path", "")).startswith(self.exempt):
            given = dict(scope.get("headers") or []).get(b"authorization", b"")
            scheme, _, credential = given.partition(b" ")
            if not (scheme.lower() == b"bearer" and hmac.compare_digest(credential.strip(), self.token)):
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"www-authenticate", b'Bearer realm="batch-mcp"')]})
                await send({"type": "http.response.body",
                            "body": b'{"error":"unauthorized","message":"Send Authorization: Bearer <token>"}'})
                return
        await self.app(scope, receive, send)


class UnsafeBinding(Exception):
    """Refusal to expose an unauthenticated server beyond this machine, or to serve in a way that cannot work."""


def check_binding(host: str, auth_token: str | None, *, oauth: bool = False) -> None:
    """Refuse a server that other machines could reach without a token too long to guess (or OAuth)."""
    if is_loopback(host) or oauth:
        return
    if not auth_token:
        raise UnsafeBinding(
            f"Refusing to serve on {host} without authentication: anyone who can reach it could run batch jobs "
            "on your account and read your files. Pass --auth-token (or BATCH_MCP_AUTH_TOKEN), set "
            "BATCH_MCP_OAUTH_INTROSPECTION_URL (an OAuth resource server), or bind 127.0.0.1."
        )
    if len(auth_token) < MIN_PUBLIC_AUTH_TOKEN:
        raise UnsafeBinding(
            f"Refusing to serve on {host} with a {len(auth_token)}-character auth token: off loopback it must be "
            f"at least {MIN_PUBLIC_AUTH_TOKEN} random characters. Set --auth-token (or BATCH_MCP_AUTH_TOKEN) to "
            "the output of: python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )


def rebinding_protection(host: str) -> TransportSecuritySettings | None:
    """On loopback, accept only loopback Host and Origin headers, so a web page that rebinds its DNS
    name to 127.0.0.1 cannot drive the server. The SDK does this only for three spellings of loopback;
    this covers every loopback bind (127.0.0.2, [::1], ...). Elsewhere the bearer token guards the server."""
    if not is_loopback(host):
        return None
    bound = f"[{host.strip('[]')}]" if ":" in host else host
    names = dict.fromkeys(["127.0.0.1", "localhost", "[::1]", bound])
    return TransportSecuritySettings(allowed_hosts=[f"{name}:*" for name in names],
                                     allowed_origins=[f"http://{name}:*" for name in names])


def http_app(mcp: MCPServer, transport: Transport, host: str, auth_token: str | None, *,
             hosted: bool = False) -> ASGIApp:
    """The ASGI app of an HTTP transport: DNS-rebinding protection on loopback, bearer auth with a token.
    Hosted, it is stateless (any replica answers any request: no session lives in one process) and its link
    routes are outside the bearer auth."""
    check_binding(host, auth_token, oauth=mcp.settings.auth is not None)
    security = rebinding_protection(host)
    app: ASGIApp = (mcp.sse_app(host=host, transport_security=security) if transport == "sse"
                    else mcp.streamable_http_app(host=host, transport_security=security, stateless_http=hosted))
    exempt = (f"{UPLOADS_PATH}/", f"{DOWNLOADS_PATH}/") if hosted else ()
    return BearerAuth(app, auth_token, exempt) if auth_token else app


def log_allowed_folders(settings: Settings) -> None:
    """One line at start-up, so a user can see what the agent may reach (or why it may reach nothing)."""
    if folders := settings.effective_allowed_dirs():
        log.info("allowed folders: %s", ", ".join(str(folder) for folder in folders))
    else:
        log.warning("no allowed folders: the working directory %s is too broad to allow by default, so the file "
                    "tools will refuse; restart with --allow-dir FOLDER or BATCH_MCP_ALLOWED_DIRS=FOLDER",
                    Path.cwd())


async def serve(settings: Settings, transport: Transport = "stdio", host: str = "127.0.0.1",
                port: int = 8000) -> None:
    auth = settings.auth_token.get_secret_value() if settings.auth_token else None
    if settings.hosted and transport != "streamable-http":
        raise UnsafeBinding("Hosted mode serves many callers over HTTP, each with its own keys: start it with "
                            "--transport streamable-http (stdio and SSE serve one local user).")
    oauth = oauth_of(settings)
    if transport != "stdio":  # before anything is opened: a refused server touches nothing
        check_binding(host, auth, oauth=oauth is not None)
    if not settings.hosted:  # hosted callers reach their own folders only
        log_allowed_folders(settings)
    async with open_app_state(settings) as state:
        mcp = build_server(state, oauth)
        if transport == "stdio":
            await mcp.run_stdio_async()
            return
        import uvicorn

        config = uvicorn.Config(http_app(mcp, transport, host, auth, hosted=settings.hosted), host=host, port=port,
                                log_level="warning", access_log=False, lifespan="on")
        await uvicorn.Server(config).serve()
