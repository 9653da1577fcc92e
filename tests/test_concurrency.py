"""Many calls at once: one client sending fifty, several HTTP clients side by side, and a cancelled wait
that stops polling the API at once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from batch_mcp.sandbox import SandboxServer
from batch_mcp.server import build_server, http_app, open_app_state

from conftest import fast_config, mcp_session, settings_for

SUBMIT = {"path": "data/tickets.jsonl"}
#: tool -> (arguments, how many of the fifty concurrent calls use it)
FIFTY_CALLS: dict[str, tuple[dict[str, Any], int]] = {
    "submit_batch": ({"path": "data/tickets.jsonl", "metadata": [{"key": "run", "value": "concurrent"}]}, 15),
    "upload_batch_file": ({"path": "data/reviews-anthropic.jsonl"}, 10),
    "validate_batch_file": ({"path": "data/tickets.jsonl"}, 15),
    "list_batches": ({"limit": 5}, 10),
}


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_fifty_concurrent_calls_from_one_client(sandbox: SandboxServer, workdir: Path, mode: str) -> None:
    """Identical submissions racing each other still make one job, and every other call answers correctly."""
    assert sum(count for _, count in FIFTY_CALLS.values()) == 50
    answers: dict[str, list[Any]] = {tool: [] for tool in FIFTY_CALLS}
    before = sandbox.sandbox.stats()["jobs"]
    async with mcp_session(settings_for(sandbox, workdir), mode=mode) as (client, _):

        async def call(tool: str, arguments: dict[str, Any]) -> None:
            answers[tool].append(await client.call_tool(tool, arguments))

        async with anyio.create_task_group() as tasks:
            for tool, (arguments, count) in FIFTY_CALLS.items():
                for _ in range(count):
                    tasks.start_soon(call, tool, arguments)
    assert {tool: len(results) for tool, results in answers.items()} == {
        tool: count for tool, (_, count) in FIFTY_CALLS.items()}
    assert not [r.content[0].text for results in answers.values() for r in results if r.is_error]
    assert len({r.structured_content["batch"]["batch_id"] for r in answers["submit_batch"]}) == 1
    assert sandbox.sandbox.stats()["jobs"] == before + 1
    assert all(r.structured_content["requests"] == 300 for r in answers["validate_batch_file"])
    assert len({r.structured_content["sha256"] for r in answers["upload_batch_file"]}) == 1


async def test_several_clients_at_once_over_streamable_http(sandbox: SandboxServer, workdir: Path) -> None:
    """Four sessions on one HTTP app, each submitting its own job and one shared job, then waiting and
    downloading: every session sees its own jobs, and the shared submission is one job."""
    before = sandbox.sandbox.stats()["jobs"]
    outcomes: dict[int, tuple[str, str, int]] = {}
    async with open_app_state(settings_for(sandbox, workdir)) as state:
        mcp = build_server(state)
        app = http_app(mcp, "streamable-http", "127.0.0.1", None)
        async with mcp.session_manager.run():

            async def session(number: int) -> None:
                transport = httpx2.ASGITransport(app=app)
                async with httpx2.AsyncClient(transport=transport, timeout=60) as http, \
                        Client(streamable_http_client("http://127.0.0.1:8000/mcp", http_client=http)) as client:
                    label = {"key": "client", "value": str(number)}
                    own = await client.call_tool("submit_batch", {"path": "data/tickets.jsonl", "metadata": [label]})
                    shared = await client.call_tool("submit_batch", {"path": "data/reviews-anthropic.jsonl"})
                    batch_id = own.structured_content["batch"]["batch_id"]
                    await client.call_tool("wait_for_batch", {"batch_id": batch_id, "timeout_s": 30,
                                                              "poll_interval_s": 0.05})
                    summary = await client.call_tool("download_batch_results",
                                                     {"batch_id": batch_id, "dest_dir": f"client-{number}"})
                    assert not summary.is_error, summary.content[0].text
                    done = summary.structured_content["succeeded"] + summary.structured_content["failed"]
                    outcomes[number] = (batch_id, shared.structured_content["batch"]["batch_id"], done)

            async with anyio.create_task_group() as tasks:
                for number in range(4):
                    tasks.start_soon(session, number)
    assert len({own for own, _, _ in outcomes.values()}) == 4
    assert len({shared for _, shared, _ in outcomes.values()}) == 1
    assert [done for _, _, done in outcomes.values()] == [300] * 4
    assert sandbox.sandbox.stats()["jobs"] == before + 5


@pytest.fixture(scope="module")
def never_ready() -> Iterator[SandboxServer]:
    """A sandbox whose jobs stay ``validating`` for a minute: a wait on them only ever polls."""
    with SandboxServer(fast_config(validating_s=60)) as server:
        yield server


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_cancelling_a_wait_stops_polling_at_once(never_ready: SandboxServer, workdir: Path,
                                                       mode: str) -> None:
    log = never_ready.sandbox.requests

    def polls() -> int:
        return sum(r.operation == "get_batch" for r in log)

    async with mcp_session(settings_for(never_ready, workdir), mode=mode) as (client, _):
        batch_id = (await client.call_tool("submit_batch", SUBMIT)).structured_content["batch"]["batch_id"]
        started = polls()
        with anyio.move_on_after(0.4) as waiting:
            await client.call_tool("wait_for_batch", {"batch_id": batch_id, "timeout_s": 60,
                                                      "poll_interval_s": 0.05})
        assert waiting.cancelled_caught
        await anyio.sleep(0.05)  # a poll already on the wire may still land
        at_cancel = polls()
        await anyio.sleep(0.5)  # longer than the next poll interval
        assert at_cancel - started >= 3 and polls() == at_cancel
        still = await client.call_tool("get_batch", {"batch_id": batch_id})  # the session is still usable
        assert still.structured_content["status"] == "validating"

