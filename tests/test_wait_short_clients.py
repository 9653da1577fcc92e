"""wait_for_batch for clients whose timeout we cannot know: it answers inside a 5 s client timeout (what
openai-agents allows a tool by default) unless the client asked for progress, in which case it waits longer
and sends progress every few seconds; an agent loop that just calls again finishes a long job."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from batch_mcp.sandbox import SandboxServer
from batch_mcp.services.waiting import HEARTBEAT_S, QUICK_WAIT_S

from conftest import fast_config, mcp_session, settings_for

#: What openai-agents gives a tool call by default.
CLIENT_TIMEOUT_S = 5.0


@pytest.fixture(scope="module")
def slow() -> Iterator[SandboxServer]:
    """300 requests at 25 a second: a job of about 12 s, past any one short wait."""
    with SandboxServer(fast_config(requests_per_s=25, failure_rate=0.0)) as server:
        yield server


async def test_a_wait_without_a_timeout_answers_inside_a_short_client_timeout(slow: SandboxServer,
                                                                              workdir: Path) -> None:
    async with mcp_session(settings_for(slow, workdir, poll_interval_s=5.0)) as (client, _):
        submitted = await client.call_tool("submit_batch", {"path": "data/tickets.jsonl"})
        batch_id = submitted.structured_content["batch"]["batch_id"]
        # the client's own timeout fails the call if the answer takes longer
        waited = await client.call_tool("wait_for_batch", {"batch_id": batch_id},
                                        read_timeout_seconds=CLIENT_TIMEOUT_S)
    assert not waited.is_error, waited.content[0].text
    result = waited.structured_content
    assert result["timed_out"] and result["waited_s"] <= QUICK_WAIT_S + 0.5
    assert "call wait_for_batch again" in result["next_step"].lower()


async def test_a_client_that_listens_to_progress_is_held_longer_and_hears_every_few_seconds(
        slow: SandboxServer, workdir: Path) -> None:
    heard: list[float] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        heard.append(anyio.current_time())

    async with mcp_session(settings_for(slow, workdir, poll_interval_s=30.0)) as (client, _):
        submitted = await client.call_tool("submit_batch", {"path": "data/tickets.jsonl", "new": True})
        batch_id = submitted.structured_content["batch"]["batch_id"]
        started = anyio.current_time()
        waited = await client.call_tool("wait_for_batch", {"batch_id": batch_id, "timeout_s": 9},
                                        progress_callback=on_progress)
    assert not waited.is_error, waited.content[0].text
    assert waited.structured_content["waited_s"] > QUICK_WAIT_S  # held past the quick answer
    # polls are 30 s apart here: every notification but the first is a heartbeat between polls
    gaps = [later - earlier for earlier, later in zip([started, *heard], heard, strict=False)]
    assert len(heard) >= 3 and max(gaps) <= HEARTBEAT_S + 1.5, gaps


async def test_an_agent_loop_that_calls_again_finishes_a_long_job(slow: SandboxServer, workdir: Path) -> None:
    """What a framework's default loop does: call, see timed_out, call again, each call inside 5 s."""
    async with mcp_session(settings_for(slow, workdir)) as (client, _):
        submitted = await client.call_tool("submit_batch", {"path": "data/tickets.jsonl", "new": True})
        batch_id = submitted.structured_content["batch"]["batch_id"]
        calls = 0
        with anyio.fail_after(60):
            while True:
                calls += 1
                waited = await client.call_tool("wait_for_batch", {"batch_id": batch_id},
                                                read_timeout_seconds=CLIENT_TIMEOUT_S)
                assert not waited.is_error, waited.content[0].text
                if not waited.structured_content["timed_out"]:
                    break
        downloaded = await client.call_tool("download_batch_results", {"batch_id": batch_id})
    assert waited.structured_content["batch"]["status"] == "completed" and calls >= 2
    assert not downloaded.is_error and downloaded.structured_content["succeeded"] == 300
