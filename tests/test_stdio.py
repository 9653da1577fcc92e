"""The real server process: `batch-mcp serve` over stdio and the MCP Inspector CLI (mcp.json: test_packaging)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters

from batch_mcp.sandbox import SandboxServer


def server_env(sandbox: SandboxServer, workdir: Path) -> dict[str, str]:
    return {
        "MODEL_ACCESS_KEY": sandbox.token,
        "BATCH_MCP_BASE_URL": sandbox.base_url,
        "BATCH_MCP_ALLOWED_DIRS": str(workdir),
        "BATCH_MCP_STATE_DIR": str(workdir.parent / "state"),
        "BATCH_MCP_LOG_LEVEL": "WARNING",
        "PATH": os.environ.get("PATH", ""),
    }


def stdio_server(env: dict[str, str], *args: str, cwd: Path) -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=["-m", "batch_mcp", "serve", *args], env=env,
                                 cwd=str(cwd))


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_workflow_over_stdio(sandbox: SandboxServer, workdir: Path, mode: str) -> None:
    async with Client(stdio_server(server_env(sandbox, workdir), cwd=workdir), mode=mode) as client:
        assert client.protocol_version == {"auto": "2026-07-28", "legacy": "2025-11-25"}[mode]
        submitted = await client.call_tool("submit_batch", {"path": "data/tickets.jsonl", "new": True})
        assert not submitted.is_error, submitted.content[0].text
        batch_id = submitted.structured_content["batch"]["batch_id"]
        steps: list[float] = []

        async def on_progress(done: float, total: float | None, message: str | None) -> None:
            steps.append(done)

        waited = await client.call_tool("wait_for_batch", {"batch_id": batch_id, "timeout_s": 60,
                                                           "poll_interval_s": 0.05}, progress_callback=on_progress)
        assert waited.structured_content["batch"]["status"] == "completed" and steps[-1] == 300
        summary = await client.call_tool("download_batch_results", {"batch_id": batch_id})
        assert summary.structured_content["succeeded"] + summary.structured_content["failed"] == 300
        jobs = json.loads((await client.read_resource("batch://jobs")).contents[0].text)
        assert batch_id in {j["batch_id"] for j in jobs["jobs"]}


async def test_job_survives_server_restart(sandbox: SandboxServer, workdir: Path) -> None:
    """Submit with one server process, then list, wait on and download the job from a new one."""
    env = server_env(sandbox, workdir)
    async with Client(stdio_server(env, cwd=workdir)) as client:
        submitted = await client.call_tool("submit_batch", {"path": "data/tickets.jsonl", "new": True})
        batch_id = submitted.structured_content["batch"]["batch_id"]
    async with Client(stdio_server(env, cwd=workdir)) as client:
        jobs = json.loads((await client.read_resource("batch://jobs")).contents[0].text)["jobs"]
        mine = next(j for j in jobs if j["batch_id"] == batch_id)
        assert mine["input_path"].endswith("tickets.jsonl")  # from the job store the first process wrote
        again = await client.call_tool("submit_batch", {"path": "data/tickets.jsonl"})
        assert again.structured_content["batch"]["batch_id"] == batch_id  # remembered across the restart
        waited = await client.call_tool("wait_for_batch", {"batch_id": batch_id, "timeout_s": 60})
        assert waited.structured_content["batch"]["status"] == "completed"
        summary = await client.call_tool("download_batch_results", {"batch_id": batch_id})
        assert not summary.is_error and Path(summary.structured_content["output_path"]).is_file()


def _inspector() -> str | None:
    found = os.environ.get("BATCH_MCP_INSPECTOR") or shutil.which("mcp-inspector")
    if not found and os.environ.get("BATCH_MCP_REQUIRE_INSPECTOR"):
        pytest.fail("BATCH_MCP_REQUIRE_INSPECTOR is set but the MCP Inspector CLI was not found")
    return found


def test_inspector_cli_runs_submit_wait_results(workdir: Path) -> None:
    """The Inspector CLI against `batch-mcp serve --sandbox` over streamable HTTP (one server, many calls)."""
    inspector = _inspector()
    if inspector is None:
        pytest.skip("MCP Inspector CLI not installed (.ci/run installs it)")
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "batch_mcp", "serve", "--sandbox", "--transport", "streamable-http", "--port",
         str(port), "--allow-dir", str(workdir), "--state-dir", str(workdir.parent / "state")],
        env={**os.environ, "BATCH_MCP_LOG_LEVEL": "WARNING"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port(port)
        url = f"http://127.0.0.1:{port}/mcp"

        def inspect(*args: str) -> dict:
            done = subprocess.run([inspector, "--cli", url, "--transport", "http", *args], capture_output=True,
                                  text=True, timeout=120)
            assert done.returncode == 0, done.stderr[-2000:]
            return json.loads(done.stdout)

        tools = {t["name"] for t in inspect("--method", "tools/list")["tools"]}
        assert {"submit_batch", "wait_for_batch", "get_batch_results"} <= tools
        submitted = inspect("--method", "tools/call", "--tool-name", "submit_batch",
                            "--tool-arg", "path=data/tickets.jsonl")
        batch_id = submitted["structuredContent"]["batch"]["batch_id"]
        waited = inspect("--method", "tools/call", "--tool-name", "wait_for_batch",
                         "--tool-args-json", json.dumps({"batch_id": batch_id, "timeout_s": 60}))
        assert waited["structuredContent"]["batch"]["status"] == "completed"
        links = inspect("--method", "tools/call", "--tool-name", "get_batch_results",
                        "--tool-args-json", json.dumps({"batch_id": batch_id}))
        assert links["isError"] is False and links["structuredContent"]["output_file_url"].startswith("http://127.0.0.1")
    finally:
        server.terminate()
        server.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port}")
