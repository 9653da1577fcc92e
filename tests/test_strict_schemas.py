"""openai-agents in strict mode (what OpenAI models need for reliable tool calls) takes every tool as listed.

Its own MCP client lists the tools of a real ``batch-mcp serve`` and its own MCP conversion turns each into a
function tool with ``convert_schemas_to_strict=True``. That conversion falls back to a non-strict tool without
a word when a schema does not convert, so every tool must come out strict: no fallback. Then one submit_batch
runs through the strict tool with arguments as a strict model writes them (every property, null where it has
nothing to say), and the job on the sandbox carries the labels that were given.
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx2
import jsonschema
import pytest
from agents import Agent, RunContextWrapper
from agents.mcp import MCPServerStdio, MCPUtil
from agents.strict_schema import ensure_strict_json_schema
from agents.tool import FunctionTool
from agents.tool_context import ToolContext

from batch_mcp.sandbox import SandboxServer

from conftest import OTHER_BACKENDS
from test_stdio import server_env


@asynccontextmanager
async def strict_tools(env: dict[str, str], cwd: Path) -> AsyncIterator[dict[str, FunctionTool]]:
    """The server's tools as an openai-agents agent gets them with strict schemas asked for."""
    params = {"command": sys.executable, "args": ["-m", "batch_mcp", "serve"], "env": env, "cwd": str(cwd)}
    async with MCPServerStdio(params, name="batch-mcp", client_session_timeout_seconds=60) as server:
        tools = await MCPUtil.get_function_tools(server, True, RunContextWrapper(None), Agent(name="batch agent"))
        yield {tool.name: tool for tool in tools if isinstance(tool, FunctionTool)}


def refusal(tool: FunctionTool) -> str:
    """Why the converter kept a tool non-strict: the same call MCPUtil.to_function_tool makes, left to raise."""
    try:
        ensure_strict_json_schema(copy.deepcopy(tool.params_json_schema), _reject_open_objects=True)
    except Exception as exc:
        return str(exc)
    return "converted here, yet the tool is not strict"


ANTHROPIC_TOO = {**OTHER_BACKENDS, "ANTHROPIC_API_KEY": "sk-ant-test-not-real", "ANTHROPIC_BASE_URL": "http://127.0.0.1:9"}


@pytest.mark.parametrize(("backends", "count"), [({}, 13), (OTHER_BACKENDS, 13), (ANTHROPIC_TOO, 14)],
                         ids=["digitalocean only", "four backends", "five backends"])
async def test_every_tool_converts_in_strict_mode(sandbox: SandboxServer, workdir: Path,
                                                  backends: dict[str, str], count: int) -> None:
    async with strict_tools({**server_env(sandbox, workdir), **backends}, workdir) as tools:
        assert len(tools) == count  # delete_batch comes with a backend that can delete (Anthropic)
        assert ("delete_batch" in tools) is (count == 14)
        not_strict = {name: refusal(tool) for name, tool in tools.items() if not tool.strict_json_schema}
        assert not_strict == {}
        offers_backend = "backend" in tools["submit_batch"].params_json_schema["properties"]
        assert offers_backend is bool(backends)  # the multi-backend shapes were the ones converted


async def test_labels_reach_the_job_through_the_strict_tool(sandbox: SandboxServer, workdir: Path) -> None:
    labels = [{"key": "project", "value": "support-triage"}, {"key": "run", "value": "strict mode"}]
    async with strict_tools(server_env(sandbox, workdir), workdir) as tools:
        submit = tools["submit_batch"]
        schema = submit.params_json_schema
        arguments = {"path": "data/tickets.jsonl", "provider": None, "endpoint": None, "metadata": labels,
                     "new": False}
        assert set(arguments) == set(schema["required"])  # strict: the model sends every property
        jsonschema.validate(arguments, schema)
        raw = json.dumps(arguments)
        output = await submit.on_invoke_tool(ToolContext(None, tool_name=submit.name, tool_call_id="call-1",
                                                         tool_arguments=raw), raw)
    submitted = json.loads(output["text"])
    assert submitted["batch"]["metadata"] == {"project": "support-triage", "run": "strict mode"}
    job_id = submitted["batch"]["batch_id"].removeprefix("digitalocean:")
    async with httpx2.AsyncClient() as http:
        job = await http.get(f"{sandbox.base_url}/v1/batches/{job_id}",
                             headers={"Authorization": f"Bearer {sandbox.token}"})
    assert job.status_code == 200, job.text
    assert job.json()["metadata"] == {"project": "support-triage", "run": "strict mode"}
