"""`batch-mcp validate`: exit 0 valid, 1 invalid, 2 unusable; human text or the full JSON report."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest


def validate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "batch_mcp", "validate", *args], capture_output=True, text=True,
                          timeout=60)


def test_valid_file_exits_0_with_a_summary(workdir: Path) -> None:
    done = validate(str(workdir / "data" / "tickets.jsonl"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("VALID") and "300 requests" in done.stdout


def test_invalid_file_exits_1_naming_the_line(workdir: Path) -> None:
    bad = workdir / "data" / "bad.jsonl"
    lines = (workdir / "data" / "tickets.jsonl").read_text().splitlines()
    bad.write_text("\n".join([*lines[:4], lines[1], "not json"]) + "\n")
    done = validate(str(bad))
    assert done.returncode == 1
    assert "line 5" in done.stdout and "duplicate" in done.stdout and "line 6" in done.stdout
    report = json.loads(validate(str(bad), "--json").stdout)
    assert report["valid"] is False and report["error_count"] == 2
    assert [p["line"] for p in report["problems"]] == [5, 6]


@pytest.mark.parametrize("target", ["missing.jsonl", "data", "/dev/zero"])
def test_unusable_input_exits_2(workdir: Path, target: str) -> None:
    path = target if target.startswith("/") else str(workdir / target)
    done = validate(path)
    assert done.returncode == 2 and "unusable input" in done.stderr


def test_provider_mismatch_is_invalid(workdir: Path) -> None:
    done = validate(str(workdir / "data" / "tickets.jsonl"), "--provider", "anthropic", "--json")
    assert done.returncode == 1 and json.loads(done.stdout)["valid"] is False


@pytest.mark.parametrize("dialect", ["openapi", "godo"])
async def test_sandbox_command_serves_the_api(tmp_path: Path, dialect: str) -> None:
    """`batch-mcp sandbox` as a user starts it, driven by our backend in both dialects."""
    from datetime import UTC, datetime

    from batch_mcp.backends.base import AuthenticationError
    from batch_mcp.backends.digitalocean import DigitalOceanBackend
    from batch_mcp.domain import CreateSpec

    from test_stdio import free_port, wait_for_port

    port = free_port()  # the token as pasted, with the newline a shell's $(cat token) or a copy keeps
    server = subprocess.Popen([sys.executable, "-m", "batch_mcp", "sandbox", "--port", str(port), "--token", " t-1\n",
                               "--dialect", dialect], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port(port)
        base = f"http://127.0.0.1:{port}"
        requests = tmp_path / "r.jsonl"
        requests.write_text('{"custom_id": "a", "params": {"model": "claude-3-5-haiku-latest", "max_tokens": 5, '
                            '"messages": [{"role": "user", "content": "hi"}]}}\n')
        backend = DigitalOceanBackend(api_key="t-1", base_url=base)
        try:
            staged = await backend.upload(requests, "anthropic")
            job = await backend.create(CreateSpec(input_ref=staged.ref, line_format="anthropic",
                                                  client_token="request-1", planned_at=datetime.now(UTC)))
            listed = [listed.id for listed in (await backend.list()).jobs]
        finally:
            await backend.aclose()
        assert listed == [job.id] and job.input_ref == staged.ref and job.client_token == "request-1"
        stranger = DigitalOceanBackend(api_key="wrong", base_url=base)
        try:
            with pytest.raises(AuthenticationError):
                await stranger.get(job.id)
        finally:
            await stranger.aclose()
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_sandbox_command_serves_anthropic(tmp_path: Path) -> None:
    """`batch-mcp sandbox --backend anthropic`, driven by the official SDK: results_url names the host it runs on."""
    import anthropic

    from test_stdio import free_port, wait_for_port

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "batch_mcp", "sandbox", "--backend", "anthropic", "--host",
                               "127.0.0.1", "--port", str(port), "--token", "t-1", "--requests-per-s", "1000"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_port(port)
        base = f"http://127.0.0.1:{port}"
        client = anthropic.Anthropic(api_key="t-1", base_url=base, max_retries=0, _strict_response_validation=True)
        batch = client.messages.batches.create(requests=[{"custom_id": "a", "params": {
            "model": "claude-haiku-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}}])
        assert [b.id for b in client.messages.batches.list()] == [batch.id]
        for _ in range(100):
            if (done := client.messages.batches.retrieve(batch.id)).processing_status == "ended":
                break
            time.sleep(0.05)
        assert done.results_url == f"{base}/v1/messages/batches/{batch.id}/results"
        assert [line.custom_id for line in client.messages.batches.results(batch.id)] == ["a"]
    finally:
        server.terminate()
        _, stderr = server.communicate(timeout=10)
    assert f"anthropic at {base} (the Anthropic Message Batches API)" in stderr
