"""Arguments that used to get a misleading answer (an "internal error", "does not exist", or silence) now
get one naming the cause and the fix, before anything reaches the API."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from batch_mcp.sandbox import SandboxServer

from conftest import mcp_session, settings_for

#: The statuses the documented list endpoint filters by (do-batch-api.md §4, the OpenAPI enum).
LIST_STATUSES = ["validating", "in_progress", "finalizing", "completed", "failed", "expired", "cancelling",
                 "cancelled"]


def text_of(result: Any) -> str:
    return result.content[0].text


def api_calls(sandbox: SandboxServer) -> int:
    return len(sandbox.sandbox.requests)


async def test_a_nul_character_in_a_path_is_named(sandbox: SandboxServer, workdir: Path,
                                                  subtests: pytest.Subtests) -> None:
    calls = {"validate_batch_file": {"path": "data/tick\x00ets.jsonl"},
             "prepare_batch_file": {"source": "data/tickets.jsonl", "prompt": "{text}", "model": "m",
                                    "output": "out\x00.jsonl"},
             "submit_batch": {"path": "data/\x00tickets.jsonl"}}
    async with mcp_session(settings_for(sandbox, workdir)) as (client, _):
        for tool, arguments in calls.items():
            with subtests.test(tool):
                result = await client.call_tool(tool, arguments)
                assert result.is_error and "NUL character" in text_of(result), text_of(result)
                assert "Unexpected" not in text_of(result) and "without it" in text_of(result)


async def test_file_uris_are_taken_as_paths(sandbox: SandboxServer, workdir: Path, tmp_path: Path) -> None:
    spaced = workdir / "my data" / "tickets.jsonl"
    spaced.parent.mkdir()
    shutil.copyfile(workdir / "data" / "tickets.jsonl", spaced)
    outside = tmp_path / "outside.jsonl"
    shutil.copyfile(spaced, outside)
    async with mcp_session(settings_for(sandbox, workdir)) as (client, _):
        accepted = [await client.call_tool("validate_batch_file", {"path": uri})
                    for uri in (spaced.as_uri(), f"file://localhost{spaced.as_uri()[7:]}")]
        remote = await client.call_tool("validate_batch_file", {"path": "file://fileserver/share/tickets.jsonl"})
        escaping = await client.call_tool("validate_batch_file", {"path": outside.as_uri()})
    for result in accepted:
        assert not result.is_error, text_of(result)
        assert result.structured_content["path"] == str(spaced.resolve())
    assert remote.is_error and "another machine" in text_of(remote) and "plain path" in text_of(remote)
    assert escaping.is_error and "outside the allowed folders" in text_of(escaping)


async def test_unknown_arguments_are_refused_by_name(sandbox: SandboxServer, workdir: Path) -> None:
    """A misspelt option used to be dropped silently: "New": true would reuse a job instead of making one."""
    before = api_calls(sandbox)
    async with mcp_session(settings_for(sandbox, workdir)) as (client, _):
        misspelt = await client.call_tool("submit_batch", {"path": "data/tickets.jsonl", "New": True})
        two = await client.call_tool("list_batches", {"stauts": "completed", "page": 2, "limit": 5})
        schema = next(t for t in (await client.list_tools()).tools if t.name == "validate_batch_file").input_schema
    assert misspelt.is_error and api_calls(sandbox) == before
    assert "submit_batch does not take an argument named New" in text_of(misspelt)
    assert "accepts path, provider, endpoint, metadata, new" in text_of(misspelt), text_of(misspelt)
    assert "arguments named page, stauts; it accepts status, limit, cursor" in text_of(two), text_of(two)
    assert set(schema["properties"]) == {"path", "provider", "endpoint"}  # ctx and roots are not arguments


async def test_list_batches_offers_only_the_statuses_the_api_filters_by(sandbox: SandboxServer,
                                                                        workdir: Path) -> None:
    before = api_calls(sandbox)
    async with mcp_session(settings_for(sandbox, workdir)) as (client, _):
        queued = await client.call_tool("list_batches", {"status": "queued"})
        tool = next(t for t in (await client.list_tools()).tools if t.name == "list_batches")
        listed = [await client.call_tool("list_batches", {"status": status, "limit": 1}) for status in LIST_STATUSES]
    assert queued.is_error and text_of(queued).startswith("Invalid arguments for list_batches: status")
    assert api_calls(sandbox) == before + len(LIST_STATUSES)
    offered = next(option["enum"] for option in tool.input_schema["properties"]["status"]["anyOf"] if "enum" in option)
    assert offered == LIST_STATUSES
    assert not any(result.is_error for result in listed)


def test_refused_tool_calls_are_logged_only_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    """MCP hosts print a stdio server's stderr to the user: an agent's bad argument is not news for them."""
    import logging

    from batch_mcp.cli import SDK_SERVER_LOGGER, USER_ERRORS_QUIETLY

    sdk = logging.getLogger(SDK_SERVER_LOGGER)
    sdk.addFilter(USER_ERRORS_QUIETLY)
    try:
        with caplog.at_level(logging.INFO):
            sdk.info("Tool %r failed: %r", "validate_batch_file", "outside the allowed folders")
            sdk.info("Tool %r rejected arguments: %r", "submit_batch", ["path"])
            sdk.error("Tool %r raised an unexpected exception", "submit_batch")
        assert [r.levelname for r in caplog.records] == ["ERROR"]  # the server's own fault stays loud
        with caplog.at_level(logging.DEBUG):
            sdk.info("Tool %r failed: %r", "validate_batch_file", "outside the allowed folders")
        assert caplog.records[-1].levelname == "DEBUG"  # and -v still shows it
    finally:
        sdk.removeFilter(USER_ERRORS_QUIETLY)


async def test_the_text_beside_structured_content_is_compact_json(sandbox: SandboxServer, workdir: Path) -> None:
    """Clients that show (or truncate) the text block get the same data, without indentation."""
    async with mcp_session(settings_for(sandbox, workdir)) as (client, _):
        result = await client.call_tool("validate_batch_file", {"path": "data/tickets.jsonl"})
    text = result.content[0].text
    assert json.loads(text) == result.structured_content
    assert "\n" not in text and len(text) < 0.9 * len(json.dumps(result.structured_content, indent=2))
