"""A file over one batch's limits is valid: validation says how many batches, submit_batch runs them as one job
group, the single-batch tools refuse it pointing there, and the cost estimate prices all of it.

Small limits (``Settings(max_requests=..., max_bytes=...)``) keep the files small.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from batch_mcp.sandbox import SandboxServer

from conftest import mcp_session, settings_for


def _text(result) -> str:
    return result.content[0].text


async def _run(client, tool: str, **args) -> dict:
    result = await client.call_tool(tool, args)
    assert not result.is_error, _text(result)
    return result.structured_content


def _uploads(sandbox: SandboxServer) -> int:
    return sandbox.sandbox.stats()["files"]


async def test_validation_announces_the_batches_submit_then_makes(sandbox: SandboxServer, workdir: Path) -> None:
    async with mcp_session(settings_for(sandbox, workdir, max_requests=120)) as (client, _):
        report = await _run(client, "validate_batch_file", path="data/tickets.jsonl")
        assert report["valid"] and report["batches"] == 3 and report["error_count"] == 0
        (warning,) = [p for p in report["problems"] if p["code"] == "too_many_requests"]
        assert warning["severity"] == "warning" and warning["line"] == 121
        assert "3 batches in one job group" in warning["message"] and "submit_batch" in warning["message"]

        before = _uploads(sandbox)
        refused = await client.call_tool("upload_batch_file", {"path": "data/tickets.jsonl"})
        assert refused.is_error and "submit_batch" in _text(refused) and "nothing was uploaded" in _text(refused)
        assert _uploads(sandbox) == before

        submitted = await _run(client, "submit_batch", path="data/tickets.jsonl")
        assert submitted["batch"]["batch_id"].startswith("group-")
        assert len(submitted["batch"]["parts"]) == report["batches"]


async def test_create_batch_refuses_an_upload_over_todays_limits(sandbox: SandboxServer, workdir: Path) -> None:
    async with mcp_session(settings_for(sandbox, workdir)) as (client, _):
        file_id = (await _run(client, "upload_batch_file", path="data/tickets.jsonl"))["file_id"]
    async with mcp_session(settings_for(sandbox, workdir, max_requests=100)) as (client, _):
        jobs_before = sandbox.sandbox.stats()["jobs"]
        refused = await client.call_tool("create_batch", {"file_id": file_id, "provider": "openai",
                                                          "endpoint": "/v1/chat/completions"})
        assert refused.is_error and "submit_batch" in _text(refused) and "300 requests" in _text(refused)
        assert sandbox.sandbox.stats()["jobs"] == jobs_before


async def test_the_estimate_prices_every_request_of_a_file_over_the_byte_limit(sandbox: SandboxServer,
                                                                             workdir: Path) -> None:
    async with mcp_session(settings_for(sandbox, workdir, max_bytes=50_000)) as (client, _):
        report = await _run(client, "validate_batch_file", path="data/tickets.jsonl")
        assert report["valid"] and report["batches"] == 4
        assert [p["code"] for p in report["problems"]] == ["file_too_large"]
        cost = await _run(client, "estimate_batch_cost", path="data/tickets.jsonl")
        assert [m["requests"] for m in cost["models"]] == [300] and cost["total_cost"] > 0
        assert "all 4 batches" in cost["note"]


async def test_a_line_longer_than_a_batch_is_still_an_error(sandbox: SandboxServer, workdir: Path) -> None:
    path = workdir / "data" / "long.jsonl"
    lines = (workdir / "data" / "tickets.jsonl").read_text().splitlines(keepends=True)[:3]
    path.write_text(lines[0] + lines[1].replace('"content": "', '"content": "' + "x" * 2_000, 1) + lines[2])
    async with mcp_session(settings_for(sandbox, workdir, max_bytes=1_500)) as (client, _):
        report = await _run(client, "validate_batch_file", path="data/long.jsonl")
        assert not report["valid"] and [(p["line"], p["code"]) for p in report["problems"]] == [(2, "line_too_large")]
        before = _uploads(sandbox)
        refused = await client.call_tool("submit_batch", {"path": "data/long.jsonl"})
        assert refused.is_error and "line 2" in _text(refused) and "1,500-byte limit" in _text(refused)
        assert _uploads(sandbox) == before


async def test_the_run_batch_prompt_lets_a_job_group_through(sandbox: SandboxServer, workdir: Path) -> None:
    async with mcp_session(settings_for(sandbox, workdir)) as (client, _):
        text = (await client.get_prompt("run_batch", {"path": "data/tickets.jsonl"})).messages[0].content.text
    assert "Warnings do not block" in text and "job group" in text


def test_cli_validate_exits_0_for_a_file_that_runs_as_several_batches(workdir: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "batch_mcp", "validate", str(workdir / "data" / "tickets.jsonl"),
                           "--max-requests", "100", "--json"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout
    report = json.loads(done.stdout)
    assert report["valid"] and report["batches"] == 3
