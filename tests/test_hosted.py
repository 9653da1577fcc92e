"""Hosted mode: one server, many tenants, each with its own provider keys per request, files through links.

Every tenant here talks to the same server through the SDK's real streamable-HTTP client (the server's ASGI
app in memory, its session manager running), against the embedded sandbox; a second server proves that a
caller's key is what reaches the provider. What each tenant sees is checked from the other one's side.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client

from batch_mcp.config import ConfigurationError, Settings, load_settings
from batch_mcp.sandbox import SandboxServer
from batch_mcp.server import build_server, http_app, open_app_state
from batch_mcp.services.links import Links

from test_stdio import server_env

#: 2025-era clients still send resources/subscribe, which the SDK marks deprecated
pytestmark = pytest.mark.filterwarnings("ignore:resources/(un)?subscribe is removed")

SECRET = "account-secret-for-tests-0123456789abcdef"
AUTH = "service-token-for-tests-0123456789abcdef"
KEY_A = "dop_v1_tenant-A-key-6f1c0ffee"
KEY_B = "dop_v1_tenant-B-key-9d2beef00"
ORIGIN = "http://127.0.0.1:8000"


def hosted_settings(workdir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = dict(sandbox=True, hosted=True, account_secret=SECRET, auth_token=AUTH,
                                  state_dir=workdir.parent / "state", poll_interval_s=0.05)
    values.update(overrides)
    return Settings(**values)


class Hosted:
    """The hosted server's app in memory: raw HTTP for the link routes, MCP clients for the tenants."""

    def __init__(self, app: Any) -> None:
        self.transport = httpx2.ASGITransport(app=app)

    def http(self, headers: dict[str, str] | None = None) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(transport=self.transport, base_url=ORIGIN, headers=headers or {}, timeout=60)

    @asynccontextmanager
    async def tenant(self, key: str | None, backend: str = "DigitalOcean", mode: str = "auto"
                     ) -> AsyncIterator[Client]:
        headers = {"Authorization": f"Bearer {AUTH}", **({f"X-Api-Key-{backend}": key} if key else {})}
        async with self.http(headers) as http, Client(streamable_http_client(f"{ORIGIN}/mcp", http_client=http),
                                                      mode=mode) as client:
            yield client


@asynccontextmanager
async def hosted_server(settings: Settings) -> AsyncIterator[Hosted]:
    async with open_app_state(settings) as state:
        mcp = build_server(state)
        app = http_app(mcp, "streamable-http", "127.0.0.1", AUTH, hosted=True)
        async with mcp.session_manager.run():
            yield Hosted(app)


async def call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content[0].text
    return result.structured_content or {}


async def refused(client: Client, tool: str, **arguments: Any) -> str:
    result = await client.call_tool(tool, arguments)
    assert result.is_error, (tool, result.structured_content)
    return result.content[0].text


async def upload(server: Hosted, client: Client, path: Path) -> tuple[str, httpx2.Response]:
    """create_upload_link, then the PUT its curl line would make."""
    link = await call(client, "create_upload_link")
    assert link["curl"].startswith("curl -fsS -T ") and link["upload_url"] in link["curl"]
    async with server.http() as http:  # no service token, no key: the link is the credential
        answer = await http.put(link["upload_url"], content=path.read_bytes())
    return link["upload_id"], answer


async def finished(client: Client, batch_id: str) -> dict[str, Any]:
    for _ in range(30):
        waited = await call(client, "wait_for_batch", batch_id=batch_id, timeout_s=5)
        if waited["batch"]["terminal"]:
            return waited
    raise AssertionError(f"{batch_id} never finished")


async def test_two_tenants_reach_only_their_own_jobs_uploads_and_results(
        workdir: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    tickets = workdir / "data" / "tickets.jsonl"
    said: list[str] = []  # every answer either tenant got, to look for keys in
    async with hosted_server(hosted_settings(workdir)) as server, \
            server.tenant(KEY_A) as alice, server.tenant(KEY_B) as bob:
        upload_id, put = await upload(server, alice, tickets)
        assert put.status_code == 201 and put.json()["valid"] and put.json()["requests"] == 300
        said.append(put.text)

        # Bob cannot submit Alice's upload, and her spent link takes nothing more from anyone
        said.append(await refused(bob, "submit_batch", upload_id=upload_id))
        assert f"No upload {upload_id!r} for your key" in said[-1]
        async with server.http() as http:
            again = await http.put(put.request.url, content=tickets.read_bytes())
        assert again.status_code == 410

        submitted = await call(alice, "submit_batch", upload_id=upload_id)
        batch_id = submitted["batch"]["batch_id"]
        assert (await call(alice, "submit_batch", upload_id=upload_id))["reused_existing_job"]
        said.append(str(submitted))

        for tool in ("get_batch", "wait_for_batch", "cancel_batch", "download_batch_results",
                     "get_batch_results", "retry_failed_requests"):
            said.append(await refused(bob, tool, batch_id=batch_id))
            assert "No batch job" in said[-1] or "not found" in said[-1].lower(), (tool, said[-1])
        bobs_list = await call(bob, "list_batches")
        assert batch_id not in str(bobs_list)
        bobs_jobs = await bob.read_resource("batch://jobs")
        assert batch_id not in str(bobs_jobs)
        with pytest.raises(MCPError):
            await bob.read_resource(f"batch://jobs/{batch_id}")
        # nor hear when hers changes, in either era (a guessed id would tell him that much)
        with anyio.fail_after(5), pytest.raises(MCPError, match="for your key"):
            async with bob.listen(resource_subscriptions=[f"batch://jobs/{batch_id}"]):
                pass
        async with server.tenant(KEY_B, mode="legacy") as bob_2025, server.tenant(KEY_A, mode="legacy") as alice_2025:
            with pytest.raises(MCPError, match="for your key"):
                await bob_2025.subscribe_resource(f"batch://jobs/{batch_id}")
            await alice_2025.subscribe_resource(f"batch://jobs/{batch_id}")

        listed = await call(alice, "list_batches")
        assert [job["input_path"] for job in listed["batches"]] == [f"uploads/{upload_id}.jsonl"]
        assert batch_id in str(await alice.read_resource("batch://jobs"))
        detail = str(await alice.read_resource(f"batch://jobs/{batch_id}"))
        assert f"uploads/{upload_id}.jsonl" in detail and str(workdir.parent) not in detail
        await finished(alice, batch_id)
        summary = await call(alice, "download_batch_results", batch_id=batch_id)
        said.append(str(summary))
        links = [summary[name] for name in ("output_path", "table_csv_path", "table_jsonl_path")]
        assert all(link.startswith(f"{ORIGIN}/downloads/") for link in links), links
        assert str(workdir.parent) not in str(summary)  # links, never server paths
        async with server.http({"X-Api-Key-DigitalOcean": KEY_A}) as own, \
                server.http({"X-Api-Key-DigitalOcean": KEY_B}) as other, server.http() as nobody:
            got = await own.get(links[0])
            assert got.status_code == 200 and got.text.count("\n") == summary["succeeded"]
            assert (await other.get(links[0])).status_code == 403
            assert (await nobody.get(links[0])).status_code == 401
            said.extend([got.text, (await other.get(links[0])).text])
        with pytest.raises(MCPError):
            await bob.read_resource(f"batch://results/{batch_id}")
        page = str(await alice.read_resource(f"batch://results/{batch_id}"))
        assert batch_id in page and str(workdir.parent) not in page

        # Bob's own job is his alone too
        bob_upload, _ = await upload(server, bob, tickets)
        bobs = await call(bob, "submit_batch", upload_id=bob_upload)
        assert not bobs["reused_existing_job"] and bobs["batch"]["batch_id"] != batch_id
        said.append(await refused(alice, "get_batch", batch_id=bobs["batch"]["batch_id"]))
    logged = "\n".join(record.getMessage() for record in caplog.records)
    kept = [path.read_bytes() for path in (workdir.parent / "state").rglob("*") if path.is_file()]
    assert any(b"digitalocean" in data for data in kept)  # the store and the files are there to look in
    for key in (KEY_A, KEY_B):
        assert key not in logged
        assert all(key not in text for text in said)
        assert all(key.encode() not in data for data in kept)  # store, uploads, results: accounts, never keys


async def test_the_service_token_guards_mcp_but_not_the_links(workdir: Path) -> None:
    async with hosted_server(hosted_settings(workdir)) as server:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY_A},
                        {"X-Api-Key-DigitalOcean": KEY_A}):  # a provider key is no service credential
            async with server.http(headers) as http:
                answer = await http.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                                         headers={"Accept": "application/json, text/event-stream"})
            assert answer.status_code == 401, headers
        async with server.http() as http:  # a forged link gets the link's refusal, not the service's
            assert (await http.put("/uploads/forged", content=b"{}\n")).status_code == 410
            assert (await http.get("/downloads/forged.token")).status_code == 403


async def test_an_upload_link_says_which_line_is_wrong_and_works_once_within_its_time(workdir: Path) -> None:
    good = (workdir / "data" / "tickets.jsonl").read_text().splitlines(keepends=True)
    bad = "".join([*good[:2], "{not json\n", *good[2:5]]).encode()
    async with hosted_server(hosted_settings(workdir, link_ttl_s=1)) as server, server.tenant(KEY_A) as alice:
        upload_id, answer = await upload(server, alice, workdir / "data" / "tickets.jsonl")
        assert answer.status_code == 201
        link = await call(alice, "create_upload_link")
        async with server.http() as http:
            rejected = await http.put(link["upload_url"], content=bad)
            assert rejected.status_code == 422 and not rejected.json()["valid"]
            assert [p["line"] for p in rejected.json()["problems"] if p["severity"] == "error"] == [3]
            assert (await http.put(link["upload_url"], content=b"".join(g.encode() for g in good))).status_code == 410
        said = await refused(alice, "submit_batch", upload_id=link["upload_id"])  # nothing of it was kept
        assert "No upload" in said
        late = await call(alice, "create_upload_link")
        await anyio.sleep(1.2)  # past its one-second life
        async with server.http() as http:
            assert (await http.put(late["upload_url"], content=b"".join(g.encode() for g in good))).status_code == 410
        assert (await call(alice, "submit_batch", upload_id=upload_id))["requests"] == 300


async def test_hosted_tools_take_uploads_and_links_instead_of_paths(workdir: Path) -> None:
    async with hosted_server(hosted_settings(workdir)) as server, server.tenant(KEY_A, mode="legacy") as alice:
        assert "create_upload_link" in alice.instructions  # the 2025-era handshake, stateless
        assert [prompt.name for prompt in (await alice.list_prompts()).prompts] == ["summarise_batch"]
        tools = {tool.name: tool for tool in (await alice.list_tools()).tools}
        assert "create_upload_link" in tools and "upload_id" in tools["submit_batch"].input_schema["properties"]
        assert not {"validate_batch_file", "upload_batch_file", "prepare_batch_file", "estimate_batch_cost",
                    "create_batch"} & set(tools)
        assert not any("path" in tool.input_schema.get("properties", {}) or "dest_dir" in tool.input_schema.get(
            "properties", {}) for tool in tools.values())
    async with hosted_server(hosted_settings(workdir)) as server, server.tenant(None) as keyless:
        said = await refused(keyless, "create_upload_link")
        assert "X-Api-Key-DigitalOcean" in said


async def test_a_callers_key_is_what_reaches_the_provider(sandbox: SandboxServer, workdir: Path) -> None:
    """Not on the embedded sandbox: a real base URL, whose API accepts Alice's key only."""
    with SandboxServer(sandbox._config.model_copy(update={"token": KEY_A})) as api:
        settings = hosted_settings(workdir, sandbox=False, base_url=api.base_url, token="server-own-key-never-used")
        async with hosted_server(settings) as server, server.tenant(KEY_A) as alice, server.tenant(KEY_B) as bob:
            assert (await call(alice, "list_batches"))["batches"] == []
            said = await refused(bob, "list_batches")
    assert "refused the key sent in the X-Api-Key-DigitalOcean header" in said and KEY_B not in said


async def test_a_malformed_key_header_is_refused_without_echoing_it(workdir: Path) -> None:
    async with hosted_server(hosted_settings(workdir)) as server, server.tenant("two words") as odd:
        with pytest.raises(MCPError, match="X-Api-Key-DigitalOcean") as refusal:
            await odd.call_tool("list_batches", {})
    assert "two words" not in str(refusal.value)


def test_download_links_are_signed_and_expire(tmp_path: Path) -> None:
    links = Links(SECRET.encode(), tmp_path, ttl_s=60)
    token = links.sign("digitalocean", "a" * 64, "job/out.jsonl", now=1000)
    assert links.check(token, now=1059).name == "job/out.jsonl"
    with pytest.raises(Exception, match="expired"):
        links.check(token, now=1060)
    payload, mac = token.split(".")
    with pytest.raises(Exception, match="not valid"):
        links.check(f"{payload[:-2]}xx.{mac}", now=1000)
    with pytest.raises(Exception, match="not valid"):  # another server secret signs other links
        Links(b"another-secret", tmp_path, ttl_s=60).check(token, now=1000)


def test_hosted_mode_needs_an_account_secret(sandbox: SandboxServer, workdir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="BATCH_MCP_ACCOUNT_SECRET is required in hosted mode"):
        load_settings(hosted=True, state_dir=tmp_path)
    with pytest.raises(ConfigurationError, match="at least 32"):
        load_settings(hosted=True, account_secret="short", state_dir=tmp_path)
    started = subprocess.run([sys.executable, "-m", "batch_mcp", "serve", "--transport", "streamable-http",
                              "--hosted", "--state-dir", str(tmp_path)], env=server_env(sandbox, workdir),
                             capture_output=True,
                             text=True, timeout=60)
    assert started.returncode == 2 and "BATCH_MCP_ACCOUNT_SECRET is required" in started.stderr
    assert "Traceback" not in started.stderr
    over_stdio = subprocess.run([sys.executable, "-m", "batch_mcp", "serve", "--hosted", "--state-dir",
                                 str(tmp_path)], capture_output=True, text=True, timeout=60,
                                env={**server_env(sandbox, workdir), "BATCH_MCP_ACCOUNT_SECRET": SECRET})
    assert over_stdio.returncode == 2 and "--transport streamable-http" in over_stdio.stderr
