"""Job ids may carry their backend (``digitalocean:batch-...``): the service routes them by that prefix, a bare id
by what the store recorded, and says what to pass when a bare id could belong to several backends."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mcp import MCPError

from batch_mcp.sandbox import SandboxServer

from conftest import mcp_session, settings_for


async def test_a_namespaced_id_reaches_the_same_job_as_its_bare_one(sandbox: SandboxServer, workdir: Path) -> None:
    async with mcp_session(settings_for(sandbox, workdir)) as (client, _):
        submitted = await client.call_tool("submit_batch", {"path": "data/tickets.jsonl"})
        assert not submitted.is_error, submitted.content[0].text
        named = submitted.structured_content["batch"]["batch_id"]
        backend, _, bare = named.partition(":")
        assert backend == "digitalocean" and bare
        found = await client.call_tool("get_batch", {"batch_id": bare})  # as stored before there were backends
        assert not found.is_error, found.content[0].text
        assert found.structured_content["batch_id"] == named
        detail = json.loads((await client.read_resource(f"batch://jobs/{bare}")).contents[0].text)
    assert detail["batch_id"] == named and detail["tracked_locally"]



async def test_among_several_backends_a_bare_unknown_id_asks_for_its_prefix(groq_too: None, sandbox: SandboxServer,
                                                                           workdir: Path) -> None:
    calls = len(sandbox.sandbox.requests)
    async with mcp_session(settings_for(sandbox, workdir)) as (client, _):
        bare = await client.call_tool("get_batch", {"batch_id": "batch-nobody-recorded"})
        elsewhere = await client.call_tool("get_batch", {"batch_id": "groq:batch_123"})
    assert bare.is_error and "backend prefix" in bare.content[0].text, bare.content[0].text
    assert elsewhere.is_error and "groq get" in elsewhere.content[0].text, elsewhere.content[0].text
    assert len(sandbox.sandbox.requests) == calls  # neither reached DigitalOcean's API


async def test_the_job_resource_asks_for_the_prefix_too(groq_too: None, sandbox: SandboxServer,
                                                         workdir: Path) -> None:
    async with mcp_session(settings_for(sandbox, workdir)) as (client, _):
        with pytest.raises(MCPError) as refused:
            await client.read_resource("batch://jobs/batch-nobody-recorded")
    assert "backend prefix" in refused.value.message and "Unexpected" not in refused.value.message
