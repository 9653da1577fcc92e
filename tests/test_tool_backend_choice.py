"""With several backends configured, the tools that start work take a ``backend`` argument naming one of them
(and only them), described by each one's limits; the call is checked by that backend's rules."""

from __future__ import annotations

from pathlib import Path

from batch_mcp.sandbox import SandboxServer

from conftest import mcp_session, settings_for

CHOOSING = {"validate_batch_file", "upload_batch_file", "submit_batch", "prepare_batch_file",
            "estimate_batch_cost", "list_batches"}



async def test_only_the_work_starting_tools_offer_the_configured_backends(groq_too: None, sandbox: SandboxServer,
                                                                          workdir: Path) -> None:
    async with mcp_session(settings_for(sandbox, workdir)) as (client, _):
        tools = {tool.name: tool.input_schema for tool in (await client.list_tools()).tools}
    offering = {name for name, schema in tools.items() if "backend" in schema.get("properties", {})}
    assert offering == CHOOSING
    choice = tools["submit_batch"]["properties"]["backend"]
    assert [option.get("enum") for option in choice["anyOf"] if "enum" in option] == [["digitalocean", "groq"]]
    assert "groq (" in choice["description"] and "Default: digitalocean" in choice["description"]
    assert "backend" not in tools["submit_batch"].get("required", [])


async def test_the_named_backend_checks_the_file(groq_too: None, sandbox: SandboxServer, workdir: Path) -> None:
    async with mcp_session(settings_for(sandbox, workdir)) as (client, _):
        groq = await client.call_tool("validate_batch_file", {"path": "data/tickets.jsonl", "backend": "groq"})
        default = await client.call_tool("validate_batch_file", {"path": "data/tickets.jsonl"})
        unknown = await client.call_tool("validate_batch_file", {"path": "data/tickets.jsonl", "backend": "nosuch"})
    assert not groq.is_error and groq.structured_content["backend"]["name"] == "groq"
    assert default.structured_content["backend"]["name"] == "digitalocean"
    assert unknown.is_error and "backend" in unknown.content[0].text


async def test_estimates_are_priced_for_the_named_backend(groq_too: None, sandbox: SandboxServer,
                                                          workdir: Path) -> None:
    async with mcp_session(settings_for(sandbox, workdir)) as (client, _):
        cost = await client.call_tool("estimate_batch_cost", {"path": "data/tickets.jsonl", "backend": "groq"})
    assert not cost.is_error and cost.structured_content["backend"] == "groq"


async def test_descriptions_state_each_configured_backends_limits(groq_too: None, sandbox: SandboxServer,
                                                                  workdir: Path) -> None:
    async with mcp_session(settings_for(sandbox, workdir)) as (client, _):
        tools = {tool.name: tool.description for tool in (await client.list_tools()).tools}
    assert "DigitalOcean: 50,000 requests, 200 MB" in tools["validate_batch_file"]
    assert "Groq:" in tools["validate_batch_file"] and "100 MB" in tools["validate_batch_file"]


async def test_line_formats_endpoints_and_windows_are_those_of_the_configured_backends(
        groq_too: None, sandbox: SandboxServer, workdir: Path) -> None:
    """Groq's windows run to 7 days, so a window becomes a choice (on submit_batch too); DigitalOcean's
    endpoints and line formats stay the offer, and the window is checked by the backend that runs it."""
    async with mcp_session(settings_for(sandbox, workdir)) as (client, _):
        tools = {tool.name: tool.input_schema for tool in (await client.list_tools()).tools}
        refused = await client.call_tool("submit_batch", {"path": "data/tickets.jsonl", "completion_window": "7d"})
    window = tools["submit_batch"]["properties"]["completion_window"]
    assert window["pattern"] and "groq: 24h to 7d" in window["description"]
    assert tools["create_batch"]["properties"]["completion_window"]["pattern"] == window["pattern"]
    endpoint = tools["submit_batch"]["properties"]["endpoint"]
    assert [option["enum"] for option in endpoint["anyOf"] if "enum" in option] == [
        ["/v1/chat/completions", "/v1/responses"]]
    assert refused.is_error and "DigitalOcean accepts a completion window of 24h" in refused.content[0].text


async def test_a_digitalocean_only_server_offers_no_window_on_submit(sandbox: SandboxServer, workdir: Path) -> None:
    async with mcp_session(settings_for(sandbox, workdir)) as (client, _):
        tools = {tool.name: tool.input_schema for tool in (await client.list_tools()).tools}
    assert "completion_window" not in tools["submit_batch"]["properties"]
    offered = tools["create_batch"]["properties"]["completion_window"]
    assert offered.get("const", offered.get("enum")) in ("24h", ["24h"]) and "pattern" not in offered
