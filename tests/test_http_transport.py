"""The HTTP transports: loopback by default, DNS-rebinding protection, bearer auth, and no public bind
without a token.

Both apps (streamable HTTP and SSE) are probed in-process through httpx2's ASGI transport; one real
``batch-mcp serve`` process per transport proves the same from the outside.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import httpx2
import pytest
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from batch_mcp.cli import build_parser
from batch_mcp.config import Settings
from batch_mcp.sandbox import SandboxServer
from batch_mcp.server import Transport, UnsafeBinding, build_server, http_app, open_app_state

from conftest import settings_for
from test_stdio import free_port, server_env, wait_for_port

AUTH = "http-SECRET-3b7d0e-5a91c4f2d8e07b36a1"  # long enough for a public bind
TRANSPORTS: list[Transport] = ["streamable-http", "sse"]
INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
              "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                         "clientInfo": {"name": "t", "version": "0"}}}
JSON_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def endpoint(transport: Transport) -> str:
    """The request that opens a session, minus streaming: a POST every transport checks before serving."""
    return "/mcp" if transport == "streamable-http" else "/messages/?session_id=00000000000000000000000000000000"


@asynccontextmanager
async def asgi_http(settings: Settings, transport: Transport, host: str = "127.0.0.1",
                    auth: str | None = None) -> AsyncIterator[httpx2.AsyncClient]:
    """An HTTP client wired to the server's ASGI app in memory, its session manager running."""
    async with open_app_state(settings) as state:
        mcp = build_server(state)
        app = http_app(mcp, transport, host, auth)
        in_memory = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=in_memory, base_url="http://127.0.0.1:8000") as http:
            if transport == "streamable-http":
                async with mcp.session_manager.run():
                    yield http
            else:
                yield http


def test_serve_binds_loopback_by_default() -> None:
    assert build_parser().parse_args(["serve"]).host == "127.0.0.1"


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_dns_rebinding_is_refused_on_every_loopback_bind(sandbox: SandboxServer, workdir: Path,
                                                               transport: Transport, host: str) -> None:
    """A page on evil.example whose name now resolves to 127.0.0.1 sends its own Host and Origin: refused."""
    async with asgi_http(settings_for(sandbox, workdir), transport, host) as http:
        url = endpoint(transport)
        foreign_host = await http.post(url, json=INITIALIZE, headers={**JSON_HEADERS, "Host": "evil.example:8000"})
        foreign_origin = await http.post(url, json=INITIALIZE, headers={**JSON_HEADERS,
                                                                        "Origin": "http://evil.example:8000"})
        own = await http.post(url, json=INITIALIZE, headers={**JSON_HEADERS, "Host": "127.0.0.1:8000",
                                                             "Origin": "http://localhost:8000"})
    assert (foreign_host.status_code, foreign_origin.status_code) == (421, 403)
    assert own.status_code not in (403, 421)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_every_request_needs_the_bearer_token(sandbox: SandboxServer, workdir: Path,
                                                    transport: Transport) -> None:
    async with asgi_http(settings_for(sandbox, workdir), transport, auth=AUTH) as http:
        for path in ("/mcp", "/sse", "/messages/", "/anything"):
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": AUTH},
                            {"Authorization": f"Basic {AUTH}"}):
                response = await http.post(path, json=INITIALIZE, headers={**JSON_HEADERS, **headers})
                assert response.status_code == 401, (path, headers)
                assert response.headers["www-authenticate"].startswith("Bearer") and AUTH not in response.text
        accepted = [await http.post(endpoint(transport), json=INITIALIZE,
                                    headers={**JSON_HEADERS, "Authorization": f"{scheme} {AUTH}"})
                    for scheme in ("Bearer", "bearer")]  # the auth scheme is case-insensitive (RFC 7235)
    assert all(response.status_code != 401 for response in accepted)


async def test_an_authenticated_client_works_over_streamable_http(sandbox: SandboxServer, workdir: Path) -> None:
    async with asgi_http(settings_for(sandbox, workdir), "streamable-http", auth=AUTH) as http:
        http.headers["Authorization"] = f"Bearer {AUTH}"
        async with Client(streamable_http_client("http://127.0.0.1:8000/mcp", http_client=http)) as client:
            result = await client.call_tool("validate_batch_file", {"path": "data/tickets.jsonl"})
    assert not result.is_error and result.structured_content["requests"] == 300


def test_auth_token_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCH_MCP_AUTH_TOKEN", AUTH)
    token = Settings().auth_token
    assert token is not None and token.get_secret_value() == AUTH and AUTH not in repr(Settings())


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_public_bind_needs_a_token(sandbox: SandboxServer, workdir: Path, transport: Transport) -> None:
    """Refused without a token; with one, the server answers whatever name clients reach it by."""
    async with open_app_state(settings_for(sandbox, workdir)) as state:
        with pytest.raises(UnsafeBinding, match="--auth-token"):
            http_app(build_server(state), transport, "0.0.0.0", None)
    async with asgi_http(settings_for(sandbox, workdir), transport, "0.0.0.0", AUTH) as http:
        response = await http.post(endpoint(transport), json=INITIALIZE,
                                   headers={**JSON_HEADERS, "Host": "batch.example.com:8000",
                                            "Authorization": f"Bearer {AUTH}"})
    assert response.status_code not in (401, 403, 421)


def test_cli_refuses_a_public_bind_without_a_token_before_touching_anything(tmp_path: Path) -> None:
    state = tmp_path / "state"
    done = subprocess.run([sys.executable, "-m", "batch_mcp", "serve", "--transport", "streamable-http",
                           "--host", "0.0.0.0", "--state-dir", str(state)],
                          capture_output=True, text=True, timeout=30,
                          env={k: v for k, v in os.environ.items() if k != "BATCH_MCP_AUTH_TOKEN"})
    assert done.returncode == 2
    assert "Refusing to serve on 0.0.0.0" in done.stderr and "--auth-token" in done.stderr
    assert not state.exists()


@contextmanager
def http_server_process(env: dict[str, str], cwd: Path, transport: Transport = "streamable-http",
                        port: int | None = None) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``batch-mcp serve`` over HTTP on a loopback port: yields its base URL and the process."""
    port = port or free_port()
    command = [str(Path(sys.executable).with_name("batch-mcp")), "serve", "--transport", transport,
               "--port", str(port)]
    server = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}", server
    finally:
        server.kill()
        server.wait(timeout=10)


@pytest.mark.parametrize("mode", ["auto", "legacy"])
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_real_http_server_process(sandbox: SandboxServer, workdir: Path, transport: Transport,
                                        mode: str) -> None:
    """Both protocol eras (2026-07-28 and the 2025-11-25 handshake) on each HTTP transport."""
    env = {**server_env(sandbox, workdir), "BATCH_MCP_AUTH_TOKEN": AUTH}
    bearer = {"Authorization": f"Bearer {AUTH}"}
    with http_server_process(env, workdir, transport) as (base, _):
        async with httpx2.AsyncClient(headers=bearer, timeout=30) as authed:
            anonymous = await authed.post(base + endpoint(transport), json=INITIALIZE,
                                          headers={**JSON_HEADERS, "Authorization": ""})
            rebound = await authed.post(base + endpoint(transport), json=INITIALIZE,
                                        headers={**JSON_HEADERS, "Host": "evil.example"})
            assert (anonymous.status_code, rebound.status_code) == (401, 421)
            target = (sse_client(base + "/sse", headers=bearer) if transport == "sse"
                      else streamable_http_client(base + "/mcp", http_client=authed))
            async with Client(target, mode=mode) as client:
                assert client.protocol_version == {"auto": "2026-07-28", "legacy": "2025-11-25"}[mode]
                submitted = await client.call_tool("submit_batch", {"path": "data/tickets.jsonl", "new": True})
                assert not submitted.is_error, submitted.content[0].text
                waited = await client.call_tool("wait_for_batch", {
                    "batch_id": submitted.structured_content["batch"]["batch_id"], "timeout_s": 30,
                    "poll_interval_s": 0.05})
    assert waited.structured_content["batch"]["status"] == "completed"


def test_plain_http_api_beyond_loopback_is_refused(tmp_path: Path) -> None:
    """The token rides every API request: a clear-text base URL off this machine is a configuration error."""
    env = {**os.environ, "MODEL_ACCESS_KEY": "tok", "BATCH_MCP_BASE_URL": "http://batch.example.com",
           "BATCH_MCP_STATE_DIR": str(tmp_path / "state")}
    done = subprocess.run([sys.executable, "-m", "batch_mcp", "serve"], capture_output=True, text=True, env=env,
                          timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 2
    assert "unencrypted" in done.stderr and "https://" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "state").exists()
