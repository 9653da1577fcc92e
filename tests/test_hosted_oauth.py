"""The service's own auth as an OAuth resource server (the SDK's token verifier, RFC 7662 introspection),
kept apart from the callers' provider keys. The authorization server cannot run here: a small introspection
endpoint on loopback stands in for it, answering as RFC 7662 says, and records what it was sent.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from test_hosted import KEY_A, ORIGIN, Hosted, call, hosted_settings

from batch_mcp.config import ConfigurationError, load_settings
from batch_mcp.hosted.oauth import oauth_of
from batch_mcp.server import build_server, http_app, open_app_state

from test_stdio import free_port, wait_for_port

RESOURCE = f"{ORIGIN}/mcp"
CLIENT = ("batch-mcp", "introspection-secret-4f1d")
TOKENS: dict[str, dict[str, Any]] = {
    "good": {"active": True, "client_id": "agent", "scope": "batch other", "sub": "alice", "aud": RESOURCE},
    "no-scope": {"active": True, "client_id": "agent", "scope": "other"},
    "elsewhere": {"active": True, "client_id": "agent", "scope": "batch", "aud": "https://elsewhere.example/mcp"},
    "expired": {"active": True, "client_id": "agent", "scope": "batch", "exp": 1},
}


def introspection(seen: list[str]) -> Starlette:
    async def introspect(request: Request) -> JSONResponse:
        body = (await request.body()).decode()
        seen.append(body + " " + " ".join(f"{k}={v}" for k, v in request.headers.items()))
        expected = "Basic " + base64.b64encode(":".join(CLIENT).encode()).decode()
        if request.headers.get("authorization") != expected:
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        return JSONResponse(TOKENS.get((await request.form()).get("token", ""), {"active": False}))

    return Starlette(routes=[Route("/introspect", introspect, methods=["POST"])])


@contextmanager
def serving(app: Starlette) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


async def test_an_oauth_token_admits_a_caller_whose_provider_key_stays_its_own(workdir: Path) -> None:
    seen: list[str] = []
    with serving(introspection(seen)) as issuer:
        settings = hosted_settings(workdir, auth_token=None, oauth_issuer=issuer,
                                   oauth_introspection_url=f"{issuer}/introspect", oauth_client_id=CLIENT[0],
                                   oauth_client_secret=CLIENT[1], oauth_scopes="batch", public_url=ORIGIN)
        async with open_app_state(settings) as state:
            mcp = build_server(state, oauth_of(settings))
            app = http_app(mcp, "streamable-http", "0.0.0.0", None, hosted=True)  # OAuth guards a public bind
            async with mcp.session_manager.run():
                server = Hosted(app)
                listing = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
                accept = {"Accept": "application/json, text/event-stream", "X-Api-Key-DigitalOcean": KEY_A}
                statuses = {}
                for token in (None, "unknown", "no-scope", "elsewhere", "expired"):
                    headers = {**accept, **({"Authorization": f"Bearer {token}"} if token else {})}
                    async with server.http(headers) as http:
                        statuses[token] = (await http.post("/mcp", json=listing)).status_code
                async with server.http() as http:
                    refused = await http.post("/mcp", json=listing, headers=accept)
                    metadata = (await http.get("/.well-known/oauth-protected-resource/mcp")).json()
                assert statuses == {None: 401, "unknown": 401, "no-scope": 403, "elsewhere": 401, "expired": 401}
                assert "resource_metadata=" in refused.headers["www-authenticate"]
                assert metadata["resource"] == RESOURCE and metadata["authorization_servers"] == [issuer]

                admitted = server.http({"Authorization": "Bearer good", "X-Api-Key-DigitalOcean": KEY_A})
                async with admitted as http, Client(streamable_http_client(f"{ORIGIN}/mcp", http_client=http)) as alice:
                    link = await call(alice, "create_upload_link")
                async with server.http() as anyone:  # the link needs no OAuth token either
                    put = await anyone.put(link["upload_url"],
                                           content=(workdir / "data" / "tickets.jsonl").read_bytes())
                assert put.status_code == 201
    assert any("token=good" in request for request in seen)
    assert all(KEY_A not in request for request in seen)  # the authorization server never sees a provider key


def test_oauth_settings_say_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="also needs BATCH_MCP_OAUTH_ISSUER, BATCH_MCP_OAUTH_CLIENT_ID"):
        load_settings(oauth_introspection_url="https://auth.example.com/introspect", state_dir=tmp_path)
    with pytest.raises(ConfigurationError, match="one kind of bearer token"):
        load_settings(oauth_introspection_url="https://auth.example.com/introspect", auth_token="t" * 40,
                      oauth_issuer="https://auth.example.com", oauth_client_id="c", oauth_client_secret="s",
                      public_url="https://batch.example.com", state_dir=tmp_path)
    with pytest.raises(ConfigurationError, match="unencrypted"):
        load_settings(oauth_introspection_url="http://auth.example.com/introspect", state_dir=tmp_path)
