"""Running the sandbox over real HTTP: in a background thread for tests and demos, or blocking for the CLI."""

from __future__ import annotations

import logging
import socket
import threading
import time
from types import TracebackType

import uvicorn
from starlette.applications import Starlette

from batch_mcp.sandbox import app as digitalocean
from batch_mcp.sandbox.anthropic import app as anthropic
from batch_mcp.sandbox.config import SandboxConfig
from batch_mcp.sandbox.openai import app as openai_family
from batch_mcp.sandbox.openai.variants import VARIANTS
from batch_mcp.sandbox.pipeline import ConnectionDropped
from batch_mcp.sandbox.state import Sandbox

STARTUP_TIMEOUT_S = 10.0


class _HideDroppedConnections(logging.Filter):
    """Injected connection drops are intended; keep their tracebacks out of the server log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], ConnectionDropped))


_hide_dropped_connections = _HideDroppedConnections()


def create_app(config: SandboxConfig | None = None) -> Starlette:
    """A fresh emulator of ``config.backend`` as an ASGI app; its state is ``app.state.sandbox``."""
    config = config or SandboxConfig()
    if config.backend == "digitalocean":
        return digitalocean.create_app(config)
    if config.backend == "anthropic":
        return anthropic.create_app(config)
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
    """

    def __init__(self, config: SandboxConfig | None = None, host: str = "127.0.0.1") -> None:
        # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on sockets that say so, and without it
        # every keep-alive response waits ~40 ms for a delayed ACK.
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, 0))
        self.origin = f"http://{host}:{self._socket.getsockname()[1]}"
        config = (config or SandboxConfig()).model_copy(update={"public_base_url": self.origin})
        self.base_url = self.origin + api_base_path(config)
        app = create_app(config)
        self.sandbox: Sandbox = app.state.sandbox
        self._server = uvicorn.Server(_uvicorn_config(app))
        self.token = config.token
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="batch-mcp-sandbox", daemon=True
        )

    def start(self) -> SandboxServer:
        self._thread.start()
        for _ in range(int(STARTUP_TIMEOUT_S / 0.01)):
            if self._server.started or not self._thread.is_alive():
                break
            time.sleep(0.01)
        if not self._server.started:
            self.stop()
            raise RuntimeError("the sandbox server did not start")
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(STARTUP_TIMEOUT_S)
        self._socket.close()

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()


def serve(config: SandboxConfig | None = None, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve the sandbox until interrupted (the CLI entry point)."""
    uvicorn.Server(_uvicorn_config(create_app(config), host=host, port=port)).run()
