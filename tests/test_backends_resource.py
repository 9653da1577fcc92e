"""``batch://backends`` and INSTRUCTIONS: every backend's facts from its capabilities, configured ones marked,
key values never shown; ``serve --sandbox`` configures every backend against its own emulator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mcp import Client

from batch_mcp.backends.registry import CATALOG
from batch_mcp.sandbox import SandboxServer

from conftest import mcp_session, settings_for
from test_stdio import server_env, stdio_server

SECRETS = {"OPENAI_API_KEY": "sk-openai-secret-7f3a", "GROQ_API_KEY": "gsk-groq-secret-91c2"}


async def read_backends(client: Client) -> dict:
    contents = (await client.read_resource("batch://backends")).contents[0]
    assert contents.mime_type == "application/json" and "\n" not in contents.text  # compact
    return json.loads(contents.text)


async def test_backends_lists_every_backend_and_hides_keys(sandbox: SandboxServer, workdir: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    async with mcp_session(settings_for(sandbox, workdir)) as (client, _):
        text = (await client.read_resource("batch://backends")).contents[0].text
        listed = await read_backends(client)
        instructions = client.instructions or ""
    assert not any(secret in text or secret in instructions for secret in SECRETS.values())
    assert sandbox.token not in text
    by_name = {entry["name"]: entry for entry in listed["backends"]}
    assert list(by_name) == list(CATALOG)
    assert {name for name, entry in by_name.items() if entry["configured"]} == {"digitalocean", "openai", "groq"}
    assert listed["default"] == "digitalocean" and by_name["digitalocean"]["default"]
    openai, groq, deepinfra = by_name["openai"], by_name["groq"], by_name["deepinfra"]
    assert "/v1/moderations" in openai["endpoints"] and openai["one_model_per_file"]
    assert openai["discount"] == 0.5 and deepinfra["discount"] == 0.2 and groq["discount"] == "unknown"
    assert groq["limits"]["max_bytes"] == 100_000_000 and groq["limits"]["max_requests"] is None
    assert groq["completion_windows"] == {"shortest": "24h", "longest": "7d"}
    assert openai["exactly_once"]["method"] == "metadata_tag"
    assert openai["metadata"]["reserved_keys"] == ["batch_mcp_token"]
    assert by_name["digitalocean"]["exactly_once"]["method"] == "request_id"
    assert deepinfra["token_variables"] == ["DEEPINFRA_TOKEN", "DEEPINFRA_API_KEY"]
    assert openai["result_retention_days"] == 30 and groq["result_retention_days"] is None
    # INSTRUCTIONS are written from the same records: Groq's unknown discount is never shown as one
    assert "OpenAI (50% off" in instructions and "Groq (batch discount unknown" in instructions
    assert "DeepInfra" not in instructions  # not configured here
    assert "Groq: no documented request cap, 100 MB" in instructions


async def test_single_backend_instructions_name_it(sandbox: SandboxServer, workdir: Path) -> None:
    async with mcp_session(settings_for(sandbox, workdir)) as (client, _):
        instructions = client.instructions or ""
    assert instructions.startswith("Runs LLM batch inference jobs. Backend: DigitalOcean (50% off")
    assert "batch://backends" in instructions
    assert "a file over one batch's limits (50,000 requests, 200 MB) runs as a job group" in instructions


@pytest.mark.parametrize("flags, default", [((), "digitalocean"), (("--backend", "groq"), "groq")])
async def test_serve_sandbox_configures_every_backend(sandbox: SandboxServer, workdir: Path,
                                                      flags: tuple[str, ...], default: str) -> None:
    env = {name: value for name, value in server_env(sandbox, workdir).items()
           if name not in ("MODEL_ACCESS_KEY", "BATCH_MCP_BASE_URL")}
    async with Client(stdio_server(env, "--sandbox", *flags, cwd=workdir)) as client:
        listed = await read_backends(client)
    assert [entry["name"] for entry in listed["backends"] if entry["configured"]] == list(CATALOG)
    assert listed["default"] == default
    assert [entry["name"] for entry in listed["backends"] if entry["default"]] == [default]


def test_unknown_backend_is_refused_before_serving(workdir: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "batch_mcp", "serve", "--backend", "nope"], cwd=workdir,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "unknown backend 'nope'" in done.stderr and "digitalocean, openai, deepinfra, groq" in done.stderr
