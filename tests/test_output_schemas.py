"""Lean output schemas: half the listing's bytes, yet every result validates against its tool's declared schema.

The SDK derives each outputSchema from the tool's return model; the server lists a lean rewrite of it
(tools/output_schemas.py). Here the whole canonical flow runs through the SDK's client and every structured
result is checked with jsonschema against what its tool declares; and the lean listing is compared with the
SDK's own: the same fields and requirements, every description still said somewhere, in at most half the bytes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import FormatChecker
from jsonschema.validators import validator_for
from mcp import Client
from mcp.server import MCPServer
from mcp.types import CallToolResult, ListToolsResult, Tool

from batch_mcp.sandbox import SandboxServer
from batch_mcp.server import build_server, open_app_state

from conftest import OTHER_BACKENDS, fast_config, mcp_session, only_digitalocean, settings_for


@pytest.fixture(scope="module")
def paced() -> Iterator[SandboxServer]:
    """A sandbox whose clock moves only when told: a job is caught running for the cancel, then finished."""
    with SandboxServer(fast_config(requests_per_s=200)) as server:
        server.sandbox.clock.freeze()
        yield server


def listing_bytes(tools: list[Tool]) -> int:
    """Size of the ``tools/list`` result as it goes over the wire."""
    dumped = ListToolsResult(tools=tools).model_dump(mode="json", by_alias=True, exclude_none=True)
    return len(json.dumps(dumped, separators=(",", ":")))


def explained(schema: dict[str, Any], whole_outputs: set[str]) -> set[str]:
    """What a schema explains about its fields: not what a whole output is, which its tool's description says."""
    defs = {name: {**value, "description": None} if name in whole_outputs else value
            for name, value in schema.get("$defs", {}).items()}
    return descriptions({**schema, "description": None, "$defs": defs})


def descriptions(schema: Any) -> set[str]:
    if isinstance(schema, dict):
        found = {schema["description"]} if isinstance(schema.get("description"), str) else set()
        return found.union(*(descriptions(value) for value in schema.values()))
    if isinstance(schema, list):
        return set().union(*(descriptions(value) for value in schema))
    return set()


def shown_elsewhere(schema: dict[str, Any]) -> dict[str, str]:
    """Fields given as a bare object (a model spelled out in another tool's schema), with their descriptions."""
    def bare(spec: dict[str, Any]) -> bool:
        types = spec.get("type")
        is_object = types == "object" or (isinstance(types, list) and "object" in types)
        return is_object and not {"properties", "additionalProperties"} & set(spec)

    return {name: spec.get("description", "") for name, spec in schema["properties"].items() if bare(spec)}


class Checked:
    """Tool calls whose structured results are validated against the schema their tool declares."""

    def __init__(self, client: Client, tools: list[Tool]) -> None:
        self.client = client
        self.schemas = {tool.name: tool.output_schema for tool in tools}
        self.seen: set[str] = set()

    async def __call__(self, tool: str, **arguments: Any) -> dict[str, Any]:
        result: CallToolResult = await self.client.call_tool(tool, arguments)
        assert not result.is_error, result.content[0].text
        schema, content = self.schemas[tool], result.structured_content
        validator = validator_for(schema)
        validator.check_schema(schema)
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
                  for e in validator(schema, format_checker=FormatChecker()).iter_errors(content)]
        assert errors == [], tool
        assert set(content) == set(schema["properties"]), tool  # every field declared, and each one sent
        self.seen.add(tool)
        return content


async def test_every_result_of_the_canonical_flow_validates_against_its_output_schema(
        paced: SandboxServer, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    only_digitalocean(monkeypatch)
    clock = paced.sandbox.clock
    (workdir / "data" / "reviews.csv").write_text("review\nBoils fast and looks great.\nLoud but strong.\n")
    async with mcp_session(settings_for(paced, workdir)) as (client, _):
        call = Checked(client, (await client.list_tools()).tools)
        assert (await call("validate_batch_file", path="data/tickets.jsonl"))["valid"]
        assert (await call("estimate_batch_cost", path="data/tickets.jsonl"))["models"]
        prepared = await call("prepare_batch_file", source="data/reviews.csv", model="gpt-4o-mini",
                              prompt="Summarise this review in one sentence: {review}")
        assert prepared["estimated_cost"]["models"]  # a nested cost the lean schema only points at
        upload = await call("upload_batch_file", path="data/reviews-anthropic.jsonl")
        created = await call("create_batch", file_id=upload["file_id"], provider="anthropic",
                             metadata=[{"key": "flow", "value": "canonical"}])
        assert created["batch"]["metadata"] == {"flow": "canonical"}
        batch_id = (await call("submit_batch", path="data/tickets.jsonl"))["batch"]["batch_id"]
        assert (await call("get_batch", batch_id=batch_id))["status"] == "validating"
        clock.advance(10)
        assert (await call("wait_for_batch", batch_id=batch_id, timeout_s=30))["batch"]["status"] == "completed"
        assert batch_id in {job["batch_id"] for job in (await call("list_batches"))["batches"]}
        assert (await call("get_batch_results", batch_id=batch_id))["output_file_url"]
        summary = await call("download_batch_results", batch_id=batch_id)
        assert summary["failed"] > 0 and summary["cost"]  # the sandbox fails some requests, for the retry
        assert (await call("get_batch", batch_id=batch_id))["cost"]["estimated"] is False
        retry = await call("retry_failed_requests", batch_id=batch_id)
        assert retry["retried"] == summary["failed"] + summary["missing"]
        retry_id = retry["submitted"]["batch"]["batch_id"]
        assert (await call("get_batch", batch_id=retry_id))["parent_batch_id"] == batch_id
        assert retry["submitted"]["batch"]["parent_batch_id"] == batch_id  # as get_batch says, from the start
        running = (await call("submit_batch", path="data/tickets.jsonl", new=True))["batch"]["batch_id"]
        clock.advance(0.2)  # past validating and queued, far from done
        assert (await call("cancel_batch", batch_id=running))["status"] in ("cancelling", "cancelled")
    assert call.seen == set(call.schemas)


@pytest.mark.parametrize("four", [False, True], ids=["digitalocean only", "four backends"])
async def test_the_lean_listing_keeps_what_the_sdk_derived_in_half_the_bytes(
        sandbox: SandboxServer, workdir: Path, monkeypatch: pytest.MonkeyPatch, four: bool) -> None:
    only_digitalocean(monkeypatch)
    for name, value in OTHER_BACKENDS.items() if four else ():
        monkeypatch.setenv(name, value)
    async with open_app_state(settings_for(sandbox, workdir)) as state:
        server = build_server(state)
        derived = await MCPServer.list_tools(server)  # the SDK's own listing, before the rewrite
        async with Client(server) as client:
            lean = (await client.list_tools()).tools
    assert [tool.name for tool in lean] == [tool.name for tool in derived]
    assert [tool.input_schema for tool in lean] == [tool.input_schema for tool in derived]
    said = "\n".join(sorted(set().union(*(descriptions(tool.output_schema) for tool in lean))))
    whole_outputs = {tool.output_schema["title"] for tool in derived}
    pointed: set[str] = set()
    for before, after in zip(derived, lean, strict=True):
        assert set(after.output_schema["properties"]) == set(before.output_schema["properties"]), before.name
        assert after.output_schema["required"] == before.output_schema["required"], before.name
        unsaid = {text for text in explained(before.output_schema, whole_outputs) if text not in said}
        assert unsaid == set(), before.name
        if "description" in after.output_schema:  # a second tool with the same output: the first explains it
            continue
        elsewhere = shown_elsewhere(after.output_schema)
        pointed |= {f"{after.name}.{name}" for name in elsewhere}
        assert {name: text for name, text in elsewhere.items()
                if not re.search(r"Shaped like \w+'s output\.$", text)} == {}, before.name
    assert {"wait_for_batch.batch", "get_batch.cost", "retry_failed_requests.submitted"} <= pointed
    assert listing_bytes(lean) <= listing_bytes(derived) / 2
