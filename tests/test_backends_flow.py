"""The canonical job on every backend, through a real MCP client: submit -> wait -> download, one job per
submission even when the create's answer is lost (on the OpenAI family, which has no idempotency key, the
job is found again by the token in its metadata), and the same after a restart."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batch_mcp.backends.registry import CATALOG
from batch_mcp.config import Settings
from batch_mcp.sandbox import SandboxServer

from conftest import fast_config, mcp_session

BACKENDS = ("digitalocean", "openai", "deepinfra", "groq", "anthropic")
#: Each backend's request file: Anthropic's own API takes only its own line format.
FILES = {"anthropic": "data/reviews-anthropic.jsonl"}


@pytest.fixture(scope="module", params=BACKENDS)
def emulator(request: pytest.FixtureRequest) -> Iterator[SandboxServer]:
    with SandboxServer(fast_config(backend=request.param, failure_rate=0.0)) as server:
        yield server


@pytest.fixture
def only(emulator: SandboxServer, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings with the emulated backend as the one configured (so also the default)."""
    for entry in CATALOG.values():
        for name in (*entry.capabilities.token_env, entry.capabilities.base_url_env):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("BATCH_MCP_BACKEND", raising=False)
    emulator.sandbox.faults.reset()
    caps = CATALOG[emulator.sandbox.config.backend].capabilities
    common: dict[str, Any] = dict(allowed_dirs=[workdir], state_dir=workdir.parent / "state", poll_interval_s=0.05,
                                  max_attempts=3, retry_base_delay_s=0.01)
    if caps.name == "digitalocean":
        return Settings(token=emulator.token, base_url=emulator.base_url, **common)
    monkeypatch.setenv(caps.token_env[0], emulator.token)
    monkeypatch.setenv(caps.base_url_env, emulator.base_url)
    return Settings(**common)


def text(result: Any) -> str:
    return result.content[0].text


def submit_args(emulator: SandboxServer) -> dict[str, str]:
    return {"path": FILES.get(emulator.sandbox.config.backend, "data/tickets.jsonl")}


def requests_in(workdir: Path, emulator: SandboxServer) -> int:
    return len((workdir / submit_args(emulator)["path"]).read_text().splitlines())


def jobs(emulator: SandboxServer) -> int:
    return emulator.sandbox.stats()["jobs"]


async def test_submit_wait_download(emulator: SandboxServer, only: Settings, workdir: Path) -> None:
    name = emulator.sandbox.config.backend
    before = jobs(emulator)
    async with mcp_session(only) as (client, _):
        submitted = await client.call_tool("submit_batch", submit_args(emulator))
        assert not submitted.is_error, text(submitted)
        batch_id = submitted.structured_content["batch"]["batch_id"]
        assert batch_id.startswith(f"{name}:") and submitted.structured_content["file_id"].startswith(f"{name}:")
        waited = await client.call_tool("wait_for_batch", {"batch_id": batch_id, "timeout_s": 30,
                                                           "poll_interval_s": 0.05})
        assert waited.structured_content["batch"]["status"] == "completed", text(waited)
        summary = await client.call_tool("download_batch_results", {"batch_id": batch_id})
        assert not summary.is_error, text(summary)
        listed = await client.call_tool("list_batches", {})
        cancelled = await client.call_tool("cancel_batch", {"batch_id": batch_id})
    result = summary.structured_content
    total = requests_in(workdir, emulator)
    assert result["succeeded"] == total and result["failed"] == 0
    rows = [json.loads(line) for line in Path(result["table_jsonl_path"]).read_text().splitlines()]
    assert len(rows) == total and all(row["status"] == "succeeded" and row["output_text"] for row in rows)
    assert batch_id in [job["batch_id"] for job in listed.structured_content["batches"]]
    assert cancelled.is_error  # a finished job cannot be cancelled, on every backend
    assert jobs(emulator) == before + 1


@pytest.mark.parametrize("recovery", ["submit again", "restart"])
async def test_a_lost_create_answer_makes_one_job(emulator: SandboxServer, only: Settings, recovery: str) -> None:
    """The create commits but its answer never arrives, and the server dies before anything else: the
    next submit (or the restarted server) finds that job instead of creating a second one."""
    before = jobs(emulator)
    async with mcp_session(only) as (client, state):
        emulator.sandbox.faults.fail_next("create_batch", "lost_answer", times=10)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(state.service.store, "attach_batch", _crash)  # no answer is ever recorded
            failed = await client.call_tool("submit_batch", submit_args(emulator))
        assert failed.is_error
        assert jobs(emulator) == before + 1  # the first create reached the service; nothing was sent blindly
        (pending,) = state.service.store.pending_submissions()
        emulator.sandbox.faults.reset()
        if recovery == "submit again":
            again = await client.call_tool("submit_batch", submit_args(emulator))
    if recovery == "restart":
        async with mcp_session(only) as (client, state):
            again = await client.call_tool("submit_batch", submit_args(emulator))
    assert jobs(emulator) == before + 1  # found again, or honestly unresolved: never a second job
    if again.is_error:
        # Anthropic keeps no metadata: with earlier batches of the same size in the window, it cannot tell
        # which is ours, so it names them and creates nothing
        assert emulator.sandbox.config.backend == "anthropic" and before > 0, text(again)
        assert "may exist on anthropic" in text(again) and "Candidates: anthropic:" in text(again)
        return
    assert again.structured_content["reused_existing_job"], text(again)
    assert again.structured_content["request_id"] == pending.request_id


def _crash(*_: object) -> None:
    raise RuntimeError("the server died before the answer was stored")
