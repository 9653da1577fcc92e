"""Running the sandbox over real HTTP: in a background thread for tests, demos and ``serve --sandbox``, or
blocking for the CLI.

The emulator apps are imported only when a sandbox is built, so a process that never calls an on-demand
sandbox does not pay for them.
"""

from __future__ import annotations

import logging
import select
import socket
import threading
import time
from types import TracebackType

import uvicorn
from starlette.applications import Starlette

from batch_mcp.sandbox.config import SandboxConfig
from batch_mcp.sandbox.openai.variants import VARIANTS
from batch_mcp.sandbox.pipeline import ConnectionDropped
from batch_mcp.sandbox.state import Sandbox

STARTUP_TIMEOUT_S = 10.0
#: Connections the listening socket holds before an on-demand sandbox accepts them.
BACKLOG = 128
log = logging.getLogger(__name__)


class _HideDroppedConnections(logging.Filter):
    """Injected connection drops are intended; keep their tracebacks out of the server log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], ConnectionDropped))


_hide_dropped_connections = _HideDroppedConnections()


def create_app(config: SandboxConfig | None = None) -> Starlette:
    """A fresh emulator of ``config.backend`` as an ASGI app; its state is ``app.state.sandbox``."""
    config = config or SandboxConfig()
    if config.backend == "digitalocean":
        from batch_mcp.sandbox import app as digitalocean

        return digitalocean.create_app(config)
    if config.backend == "anthropic":
        from batch_mcp.sandbox.anthropic import app as anthropic

        return anthropic.create_app(config)
    from batch_mcp.sandbox.openai import app as openai_family

    return openai_family.create_app(config)


def api_base_path(config: SandboxConfig) -> str:
    """Where the emulated API lives below the origin: what an SDK's base URL adds to ``http://host:port``."""
    return VARIANTS[config.backend].base_path if config.backend in VARIANTS else ""


def _uvicorn_config(app: Starlette, host: str = "127.0.0.1", port: int = 0) -> uvicorn.Config:
    logging.getLogger("uvicorn.error").addFilter(_hide_dropped_connections)
    return uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, ws="none")


class SandboxServer:
    """A sandbox listening on 127.0.0.1 at a free port, served from a background thread.

    ``with SandboxServer(config) as sb:`` gives ``sb.base_url`` (the API base an SDK takes: the origin
    for DigitalOcean and Anthropic, ``origin/v1`` for OpenAI, ``/v1/openai`` for DeepInfra, ``/openai/v1``
    for Groq),
    ``sb.origin`` (where ``/_sandbox`` admin routes live), ``sb.token`` and ``sb.sandbox`` (the live
    state, for inspection and fault injection). Presigned URLs point back at ``origin``.

    ``on_demand`` builds and starts the emulator only when its first connection arrives (which waits in
    the listening socket meanwhile): starting costs a bound socket, and a sandbox nobody calls costs nothing.
    """

    def __init__(self, config: SandboxConfig | None = None, host: str = "127.0.0.1", *,
                 on_demand: bool = False) -> None:
        # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on sockets that say so, and without it
        # every keep-alive response waits ~40 ms for a delayed ACK.
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, 0))
        self._socket.listen(BACKLOG)
        self.origin = f"http://{host}:{self._socket.getsockname()[1]}"
        self._config = (config or SandboxConfig()).model_copy(update={"public_base_url": self.origin})
        self.base_url = self.origin + api_base_path(self._config)
        self.token = self._config.token
        self._on_demand = on_demand
        self._guard = threading.Lock()  # orders building the server against stopping it
        self._stopping = False
        self._wake, self._waker = socket.socketpair()  # wakes an on-demand sandbox's wait to stop it
        self._server: uvicorn.Server | None = None
        self._sandbox: Sandbox | None = None
        if not on_demand:
            self._build()
        self._thread = threading.Thread(target=self._run, name="batch-mcp-sandbox", daemon=True)

    @property
    def sandbox(self) -> Sandbox:
        if self._sandbox is None:
            raise RuntimeError("this on-demand sandbox has not been called yet, so it has no state")
        return self._sandbox

    def _build(self) -> None:
        app = create_app(self._config)
        self._sandbox = app.state.sandbox
        self._server = uvicorn.Server(_uvicorn_config(app))

    def _run(self) -> None:
        if self._on_demand:
            select.select([self._socket, self._wake], [], [])
            with self._guard:
                if self._stopping:
                    return
                try:
                    self._build()
                except Exception:
                    log.exception("the %s sandbox could not start (its account: %s)", self._config.backend,
                                  self._config.storage_dir or "a temporary folder")
                    self._socket.close()  # refuse the waiting calls rather than leave them hanging
                    return
        assert self._server is not None
        self._server.run(sockets=[self._socket])

    def start(self) -> SandboxServer:
        self._thread.start()
        if self._on_demand:
            return self
        for _ in range(int(STARTUP_TIMEOUT_S / 0.01)):
            if self._started() or not self._thread.is_alive():
                break
            time.sleep(0.01)
        if not self._started():
            self.stop()
            raise RuntimeError("the sandbox server did not start")
        return self

    def _started(self) -> bool:
        return self._server is not None and self._server.started

    def stop(self) -> None:
        with self._guard:
            self._stopping = True
            if self._server is not None:
                self._server.should_exit = True
        self._waker.send(b"\0")
        if self._thread.is_alive():
            self._thread.join(STARTUP_TIMEOUT_S)
        for sock in (self._socket, self._wake, self._waker):
            sock.close()

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()


def serve(config: SandboxConfig | None = None, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve the sandbox until interrupted (the CLI entry point)."""
    uvicorn.Server(_uvicorn_config(create_app(config), host=host, port=port)).run()
