"""Anthropic results through the service (issue 11): an errored request that is itself invalid (here a prompt
over the context window, which only running it shows) is not resubmitted, a passing failure is; the cost
report says what is not billed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from batch_mcp.config import Settings
from batch_mcp.sandbox import SandboxServer
from batch_mcp.server import open_app_state

from conftest import fast_config, only_digitalocean


@pytest.fixture(scope="module")
def emulator() -> Iterator[SandboxServer]:
    with SandboxServer(fast_config(backend="anthropic", failure_rate=0.0)) as server:
        yield server


@pytest.fixture
def settings(emulator: SandboxServer, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    only_digitalocean(monkeypatch)
    monkeypatch.delenv("TOKEN", raising=False)
    monkeypatch.setenv("ANTHROPIC_API_KEY", emulator.token)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", emulator.base_url)
    return Settings(allowed_dirs=[workdir], state_dir=workdir.parent / "state", poll_interval_s=0.05)


def line(custom_id: str, text: str) -> str:
    return json.dumps({"custom_id": custom_id, "params": {"model": "claude-haiku-4-5", "max_tokens": 16,
                                                          "messages": [{"role": "user", "content": text}]}})


async def test_an_invalid_request_is_left_out_of_the_retry_and_the_rest_retried(settings: Settings,
                                                                                workdir: Path) -> None:
    path = workdir / "data" / "mixed.jsonl"
    path.write_text("\n".join([line("fine-1", "hello"), line("fine-2", "hi"),
                               line("flaky", "hello [[fail]]"),  # the sandbox fails it by chance, every time
                               line("too-long", "word " * 200_000)]) + "\n")  # ~250k tokens: over the window
    async with open_app_state(settings) as state:
        service = state.service
        submitted = await service.submit(str(path))
        batch_id = submitted.batch.batch_id
        assert (await service.wait(batch_id, 30, 0.05)).batch.status == "completed"
        summary = await service.download(batch_id)
        retry = await service.retry_failed(batch_id)
    assert (summary.succeeded, summary.failed) == (2, 2)
    assert summary.error_codes["invalid_request_error"] == 1 and sum(summary.error_codes.values()) == 2
    assert summary.cost is not None and "Errored, canceled and expired requests are not billed" in summary.cost.note
    assert (retry.retried, retry.failed, retry.not_retried) == (1, 1, 1)
    assert retry.retry_file is not None
    assert [json.loads(raw)["custom_id"] for raw in Path(retry.retry_file).read_text().splitlines()] == ["flaky"]
    assert "rejected as invalid" in retry.next_step and "mixed.jsonl" in retry.next_step


async def test_a_file_over_one_batchs_limits_runs_as_a_job_group(emulator: SandboxServer, settings: Settings) -> None:
    """Anthropic's limits are 100,000 requests / 256 MB; with a lower cap set, the 120 reviews run as three
    batches of one group, each created inline from its own part file, and download merges them."""
    before = emulator.sandbox.stats()["jobs"]
    async with open_app_state(settings.model_copy(update={"max_requests": 50})) as state:
        service = state.service
        report = await service.validate("data/reviews-anthropic.jsonl")
        submitted = await service.submit("data/reviews-anthropic.jsonl")
        group = submitted.batch
        assert (await service.wait(group.batch_id, 30, 0.05)).batch.status == "completed"
        summary = await service.download(group.batch_id)
    assert report.valid and report.batches == 3
    assert group.batch_id.startswith("group-") and group.parts is not None and len(group.parts) == 3
    assert all(part.startswith("anthropic:msgbatch_") for part in group.parts)
    assert emulator.sandbox.stats()["jobs"] == before + 3
    assert (summary.succeeded, summary.failed, summary.missing) == (120, 0, 0)
