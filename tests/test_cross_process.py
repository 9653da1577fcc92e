"""Two server processes on one state folder (two IDE windows, or two MCP hosts side by side): one submission
is still one job, whether they submit at the same moment or one while the other is still uploading, and a
holder killed mid-upload does not block the other."""

from __future__ import annotations

import os
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from batch_mcp.sandbox import SandboxServer
from batch_mcp.store import STORE_FILENAME

from conftest import fast_config
from test_stdio import server_env, stdio_server

SUBMIT = {"path": "data/tickets.jsonl"}
#: Long enough that the two calls overlap however loaded the machine is; the test never waits it out.
SLOW_S = 2.0
DEADLINE_S = 120


@pytest.fixture(scope="module")
def shared() -> Iterator[SandboxServer]:
    """One sandbox both servers talk to, its faults reset after every test."""
    with SandboxServer(fast_config()) as server:
        yield server


@pytest.fixture(autouse=True)
def _reset_faults(shared: SandboxServer) -> Iterator[None]:
    yield
    shared.sandbox.faults.reset()


def jobs_in(sandbox: SandboxServer) -> int:
    return sandbox.sandbox.stats()["jobs"]


async def until(condition: Any, what: str) -> None:
    """Poll a condition (no fixed sleep stands in for an event)."""
    with anyio.fail_after(DEADLINE_S):
        while not condition():
            await anyio.sleep(0.02)


def answer(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content[0].text
    return result.structured_content


@pytest.mark.parametrize("case", ["submit", "group", "create"])
async def test_two_processes_submitting_at_once_make_one_job(shared: SandboxServer, workdir: Path, case: str) -> None:
    env = server_env(shared, workdir)
    if case == "group":
        env["BATCH_MCP_MAX_REQUESTS"] = "100"  # 300 requests: a job group of three batches
    async with Client(stdio_server(env, cwd=workdir)) as first, Client(stdio_server(env, cwd=workdir)) as second:
        if case == "create":
            file_id = answer(await first.call_tool("upload_batch_file", SUBMIT))["file_id"]
            tool, arguments = "create_batch", {"file_id": file_id, "provider": "openai",
                                               "endpoint": "/v1/chat/completions"}
            shared.sandbox.faults.slow("create_batch", SLOW_S)
        else:
            tool, arguments = "submit_batch", SUBMIT
            shared.sandbox.faults.slow("upload", SLOW_S)
        before = jobs_in(shared)
        answers: list[dict[str, Any]] = []

        async def call(client: Client) -> None:
            answers.append(answer(await client.call_tool(tool, arguments)))

        with anyio.fail_after(DEADLINE_S):
            async with anyio.create_task_group() as calls:
                calls.start_soon(call, first)
                calls.start_soon(call, second)
    assert jobs_in(shared) - before == (3 if case == "group" else 1)
    assert len({a["batch"]["batch_id"] for a in answers}) == 1
    assert sorted(a["reused_existing_job"] for a in answers) == [False, True]


async def test_a_process_starting_while_another_uploads_gets_its_job(shared: SandboxServer, workdir: Path) -> None:
    env = server_env(shared, workdir)
    shared.sandbox.faults.slow("upload", SLOW_S)
    log = shared.sandbox.requests
    before, seen = jobs_in(shared), len(log)
    answers: dict[str, dict[str, Any]] = {}
    async with Client(stdio_server(env, cwd=workdir)) as first, Client(stdio_server(env, cwd=workdir)) as second:

        async def submit(name: str, client: Client) -> None:
            answers[name] = answer(await client.call_tool("submit_batch", SUBMIT))

        async with anyio.create_task_group() as calls:
            calls.start_soon(submit, "first", first)
            await until(lambda: any(r.operation == "upload" for r in log[seen:]), "the first upload")
            calls.start_soon(submit, "second", second)
    assert jobs_in(shared) - before == 1
    assert answers["second"]["batch"]["batch_id"] == answers["first"]["batch"]["batch_id"]
    assert answers["second"]["reused_existing_job"] is True
    assert sum(r.operation == "upload" for r in log[seen:]) == 1  # the second did not even upload


def claim_holders(state_dir: Path) -> list[int]:
    """The process ids holding submission claims, read as any other process would read the store."""
    connection = sqlite3.connect(state_dir / STORE_FILENAME)
    try:
        return [row[0] for row in connection.execute("SELECT pid FROM claims")]
    except sqlite3.OperationalError:  # the store is not created yet
        return []
    finally:
        connection.close()


async def test_a_claim_left_by_a_killed_process_is_taken_over(shared: SandboxServer, workdir: Path) -> None:
    env = server_env(shared, workdir)
    state_dir = Path(env["BATCH_MCP_STATE_DIR"])
    shared.sandbox.faults.slow("upload", 600)  # the first server dies while its upload hangs
    log = shared.sandbox.requests
    before, seen = jobs_in(shared), len(log)
    lost: list[BaseException] = []

    async def doomed() -> None:
        try:
            async with Client(stdio_server(env, cwd=workdir)) as client:
                await client.call_tool("submit_batch", SUBMIT)
        except Exception as exc:  # the connection drops when the process is killed
            lost.append(exc)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(doomed)
        await until(lambda: any(r.operation == "upload" for r in log[seen:]), "the first upload")
        [holder] = claim_holders(state_dir)
        os.kill(holder, signal.SIGKILL)
    assert lost and jobs_in(shared) == before
    shared.sandbox.faults.slow("upload", 0)
    async with Client(stdio_server(env, cwd=workdir)) as client:
        with anyio.fail_after(DEADLINE_S):
            submitted = answer(await client.call_tool("submit_batch", SUBMIT))
    assert submitted["reused_existing_job"] is False and jobs_in(shared) == before + 1
    assert claim_holders(state_dir) == []  # released once the job was made
