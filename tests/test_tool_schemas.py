"""A DigitalOcean-only user sees the tool arguments they saw before there were several backends.

The snapshot was taken from main before the multi-backend tools: no ``backend`` argument, the same
names, types, choices, defaults and required sets. Descriptions are left out of the comparison: they
may say more about limits without changing what a client may send.

Two changes were made to it on purpose (issue 12), by regenerating it: ``metadata`` of create_batch and
submit_batch is a list of ``{key, value}`` pairs instead of an object with free-form keys, which strict tool
calling refuses (tests/test_strict_schemas.py); and wait_for_batch's ``timeout_s`` defaults to none (a short
wait, or a longer one for a client that listens to progress). Nothing else in it changed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from batch_mcp.sandbox import SandboxServer

from conftest import mcp_session, settings_for

SNAPSHOT = Path(__file__).parent / "snapshots" / "tools_digitalocean_only.json"
OTHER_BACKEND_KEYS = ("OPENAI_API_KEY", "DEEPINFRA_TOKEN", "DEEPINFRA_API_KEY", "GROQ_API_KEY", "BATCH_MCP_BACKEND")


def structure(schema: Any) -> Any:
    """The schema without its prose: what a client may send, not how it is explained."""
    if isinstance(schema, dict):
        return {key: structure(value) for key, value in schema.items() if key not in ("description", "title")}
    if isinstance(schema, list):
        return [structure(value) for value in schema]
    return schema


async def test_a_digitalocean_only_server_keeps_every_tool_schema(sandbox: SandboxServer, workdir: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    for key in OTHER_BACKEND_KEYS:
        monkeypatch.delenv(key, raising=False)
    async with mcp_session(settings_for(sandbox, workdir)) as (client, _):
        tools = (await client.list_tools()).tools
    current = {tool.name: structure(tool.input_schema) for tool in tools}
    assert current == json.loads(SNAPSHOT.read_text())
    assert not any("backend" in schema.get("properties", {}) for schema in current.values())
