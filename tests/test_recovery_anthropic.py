"""A lost create answer on Anthropic, which keeps no metadata, through the service and its job store (issue 11):
among same-size batches in the window, one the store already attributes to another submission is never taken
for the lost one, so it is recovered to the other, with one paid job per submission; when nothing tells the
rest apart, the candidates are named and nothing is created."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from batch_mcp.config import Settings
from batch_mcp.sandbox import SandboxServer
from batch_mcp.server import open_app_state
from batch_mcp.services.once import SubmissionUnresolved

from conftest import fast_config, only_digitalocean


@pytest.fixture
def emulator() -> Iterator[SandboxServer]:
    """One per test: another test's batches of the same size would be candidates too."""
    with SandboxServer(fast_config(backend="anthropic", failure_rate=0.0, queued_s=30)) as server:
        yield server


@pytest.fixture
def settings(emulator: SandboxServer, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    only_digitalocean(monkeypatch)
    monkeypatch.delenv("TOKEN", raising=False)
    emulator.sandbox.faults.reset()
    monkeypatch.setenv("ANTHROPIC_API_KEY", emulator.token)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", emulator.base_url)
    return Settings(allowed_dirs=[workdir], state_dir=workdir.parent / "state", poll_interval_s=0.05,
                    max_attempts=3, retry_base_delay_s=0.01)


def requests_file(workdir: Path, name: str, words: str) -> str:
    lines = [{"custom_id": f"r{i}", "params": {"model": "claude-haiku-4-5", "max_tokens": 16,
                                               "messages": [{"role": "user", "content": f"{words} {i}"}]}}
             for i in range(3)]
    (workdir / name).write_text("".join(json.dumps(line) + "\n" for line in lines))
    return name


def jobs(emulator: SandboxServer) -> int:
    return emulator.sandbox.stats()["jobs"]


async def test_a_batch_known_as_another_submissions_is_never_taken_for_the_lost_one(
        emulator: SandboxServer, settings: Settings, workdir: Path) -> None:
    first, second = requests_file(workdir, "a.jsonl", "first"), requests_file(workdir, "b.jsonl", "second")
    async with open_app_state(settings) as state:
        emulator.sandbox.clock.advance(60)  # the other submission's batch lands inside the lost one's window
        other = await state.service.submit(first)
        emulator.sandbox.clock.advance(-60)
        before = jobs(emulator)
        emulator.sandbox.faults.fail_next("create_batch", "lost_answer")
        lost = await state.service.submit(second)
        again = await state.service.submit(second)
    assert jobs(emulator) == before + 1  # the lost create was not sent again
    assert lost.batch.batch_id != other.batch.batch_id and lost.batch.total == other.batch.total == 3
    assert (again.batch.batch_id, again.reused_existing_job) == (lost.batch.batch_id, True)


async def test_same_size_batches_nothing_tells_apart_are_named_and_nothing_is_created(
        emulator: SandboxServer, settings: Settings, workdir: Path) -> None:
    """The same, but the other batch was made by another server (its own job store): nothing here knows it."""
    first, second = requests_file(workdir, "c.jsonl", "third"), requests_file(workdir, "d.jsonl", "fourth")
    elsewhere = settings.model_copy(update={"state_dir": workdir.parent / "another-server"})
    async with open_app_state(elsewhere) as state:
        emulator.sandbox.clock.advance(60)
        other = await state.service.submit(first)
        emulator.sandbox.clock.advance(-60)
    async with open_app_state(settings) as state:
        before = jobs(emulator)
        emulator.sandbox.faults.fail_next("create_batch", "lost_answer")
        with pytest.raises(SubmissionUnresolved) as caught:
            await state.service.submit(second)
        (pending,) = state.service.store.pending_submissions()  # kept: the next call or a restart looks again
    assert jobs(emulator) == before + 1
    assert other.batch.batch_id in caught.value.candidates and len(caught.value.candidates) == 2
    assert pending.batch_id is None
