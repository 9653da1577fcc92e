"""Two real ``batch-mcp serve --hosted`` processes on one store, as replicas behind a load balancer would be:
any of them answers any step of a tenant's job (a link made on one is used on the other), another tenant
reaches nothing of it on either, and neither replica's log (at DEBUG) holds a key.

The provider is a sandbox that accepts Alice's key only, so what reaches it is the caller's own key.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from test_hosted import AUTH, KEY_A, KEY_B, SECRET, call, refused

from batch_mcp.sandbox import SandboxServer

from conftest import fast_config, postgres_schema
from test_stdio import free_port, wait_for_port


@contextmanager
def replica(api: SandboxServer, state: Path, log: Path, **more: str) -> Iterator[str]:
    port = free_port()
    env = {**more, "PATH": os.environ.get("PATH", ""), "BATCH_MCP_HOSTED": "1", "BATCH_MCP_ACCOUNT_SECRET": SECRET,
           "BATCH_MCP_AUTH_TOKEN": AUTH, "BATCH_MCP_BASE_URL": api.base_url, "BATCH_MCP_STATE_DIR": str(state),
           "BATCH_MCP_LOG_LEVEL": "DEBUG", "BATCH_MCP_POLL_INTERVAL_S": "0.05",
           "MODEL_ACCESS_KEY": "the-servers-own-key-is-never-used"}
    with log.open("wb") as sink:
        yield from listening([sys.executable, "-m", "batch_mcp", "serve", "--transport", "streamable-http", "--port",
                              str(port)], port, env=env, stdout=sink, stderr=sink)


def listening(command: list[str], port: int, **popen: Any) -> Iterator[str]:
    """Run ``command`` until the caller is done with the origin it serves on ``port``."""
    server = subprocess.Popen(command, **popen)
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


@contextmanager
def api_accepting(key: str, **pace: float) -> Iterator[SandboxServer]:
    with SandboxServer(fast_config(token=key, failure_rate=0.0, **pace)) as api:
        yield api


def client(origin: str, key: str) -> tuple[httpx2.AsyncClient, Client]:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {AUTH}", "X-Api-Key-DigitalOcean": key},
                              timeout=60)
    return http, Client(streamable_http_client(f"{origin}/mcp", http_client=http))


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
async def test_any_replica_serves_any_step_and_no_tenant_reaches_another(workdir: Path, tmp_path: Path,
                                                                         database: str) -> None:
    tickets = (workdir / "data" / "tickets.jsonl").read_bytes()
    logs = [tmp_path / "one.log", tmp_path / "two.log"]
    with ExitStack() as stack:
        store = {"BATCH_MCP_STORE_URL": stack.enter_context(postgres_schema())} if database == "postgresql" else {}
        api = stack.enter_context(api_accepting(KEY_A))
        one = stack.enter_context(replica(api, tmp_path / "state", logs[0], **store))
        two = stack.enter_context(replica(api, tmp_path / "state", logs[1], **store))
        http_a1, alice_one = client(one, KEY_A)
        http_a2, alice_two = client(two, KEY_A)
        http_b2, bob_two = client(two, KEY_B)
        async with http_a1, http_a2, http_b2, alice_one, alice_two, bob_two:
            link = await call(alice_one, "create_upload_link")
            put_on_two = link["upload_url"].replace(one, two)  # the load balancer sent the PUT elsewhere
            async with httpx2.AsyncClient() as curl:
                assert (await curl.put(put_on_two, content=tickets)).status_code == 201
                assert (await curl.put(link["upload_url"], content=tickets)).status_code == 410  # spent on both
            batch_id = (await call(alice_two, "submit_batch", upload_id=link["upload_id"]))["batch"]["batch_id"]
            for _ in range(30):
                if (await call(alice_one, "wait_for_batch", batch_id=batch_id, timeout_s=5))["batch"]["terminal"]:
                    break
            summary = await call(alice_two, "download_batch_results", batch_id=batch_id)
            assert "No batch job" in await refused(bob_two, "get_batch", batch_id=batch_id)
            assert "No batch job" in await refused(bob_two, "cancel_batch", batch_id=batch_id)
            async with httpx2.AsyncClient() as curl:
                fetched = await curl.get(summary["output_path"].replace(two, one),
                                         headers={"X-Api-Key-DigitalOcean": KEY_A})
                assert fetched.status_code == 200 and fetched.text.count("\n") == summary["succeeded"] == 300
                assert (await curl.get(summary["output_path"], headers={"X-Api-Key-DigitalOcean": KEY_B})
                        ).status_code == 403
            assert "refused the key sent in the X-Api-Key-DigitalOcean header" in await refused(bob_two,
                                                                                                 "list_batches")
    assert f"upload {link['upload_id']} received" in logs[1].read_text()  # the logs were written, at DEBUG
    for log in logs:
        text = log.read_text()
        assert "Traceback" not in text
        for secret in (KEY_A, KEY_B, SECRET, AUTH):
            assert secret not in text, (log.name, secret[:8])


def test_a_public_hosted_replica_needs_the_service_token(tmp_path: Path) -> None:
    env = {"PATH": os.environ.get("PATH", ""), "BATCH_MCP_HOSTED": "1", "BATCH_MCP_ACCOUNT_SECRET": SECRET,
           "BATCH_MCP_STATE_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "batch_mcp", "serve", "--transport", "streamable-http", "--host",
                           "0.0.0.0"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--auth-token" in done.stderr
