"""Replicas of one service: three ``batch-mcp serve --transport streamable-http`` processes on one PostgreSQL
store (each with a state folder of its own: nothing shared but the database) and one standalone
``batch-mcp sandbox``. Fifty agents submitting the same file at once through all three make one job; a
replica killed with SIGKILL while it creates the job, or while it waits on it, leaves the others to finish
that one job with nothing lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import AsyncExitStack, ExitStack, contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from test_http_transport import http_server_process

from batch_mcp.sandbox import SandboxServer
from batch_mcp.server import build_server, open_app_state

from conftest import postgres_schema, settings_for
from test_stdio import free_port, wait_for_port

SUBMIT = {"path": "data/tickets.jsonl"}
TOKEN = "replica-sandbox-token"
DEADLINE_S = 180
#: A crashed replica's claim is taken over after this (the default 30 s would only make the test slow).
LEASE_S = "2"


class Sandbox:
    """``batch-mcp sandbox`` in a process of its own, asked through its admin routes."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.http = httpx2.Client(base_url=base_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)

    def jobs(self) -> int:
        return int(self.http.get("/_sandbox/stats").json()["jobs"])

    def slow(self, operation: str, seconds: float) -> None:
        self.http.post("/_sandbox/slow", json={"operation": operation, "seconds": seconds}).raise_for_status()

    def calls(self, operation: str) -> int:
        return sum(r["operation"] == operation for r in self.http.get("/_sandbox/requests").json())


@pytest.fixture
def standalone(tmp_path: Path) -> Iterator[Sandbox]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "batch_mcp", "sandbox", "--port", str(port), "--token", TOKEN,
         "--requests-per-s", "100", "--failure-rate", "0", "--state-dir", str(tmp_path / "sandbox")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        yield Sandbox(f"http://127.0.0.1:{port}")
    finally:
        process.kill()
        process.wait(timeout=10)


@contextmanager
def replicas(sandbox: Sandbox, workdir: Path, url: str, count: int = 3
             ) -> Iterator[list[tuple[str, subprocess.Popen[bytes]]]]:
    """``count`` servers on the store at ``url``: their base URLs and processes."""
    with ExitStack() as stack:
        started = []
        for number in range(count):
            env = {"MODEL_ACCESS_KEY": TOKEN, "BATCH_MCP_BASE_URL": sandbox.base_url,
                   "BATCH_MCP_ALLOWED_DIRS": str(workdir), "BATCH_MCP_STATE_DIR": str(workdir.parent / f"s{number}"),
                   "BATCH_MCP_STORE_URL": url, "BATCH_MCP_CLAIM_LEASE_S": LEASE_S, "BATCH_MCP_LOG_LEVEL": "WARNING",
                   "PATH": os.environ.get("PATH", "")}
            started.append(stack.enter_context(http_server_process(env, workdir)))
        yield started


async def call(base: str, tool: str, arguments: dict[str, Any]) -> Any:
    """One agent: its own MCP client over streamable HTTP, one tool call."""
    async with httpx2.AsyncClient(timeout=DEADLINE_S) as http, \
            Client(streamable_http_client(f"{base}/mcp", http_client=http)) as client:
        return await client.call_tool(tool, arguments)


def answer(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content[0].text
    return result.structured_content


def rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


async def until(condition: Any) -> None:
    with anyio.fail_after(DEADLINE_S):
        while not await anyio.to_thread.run_sync(condition):
            await anyio.sleep(0.05)


async def test_fifty_agents_on_three_replicas_make_one_job(standalone: Sandbox, workdir: Path) -> None:
    sandbox = standalone
    sandbox.slow("upload", 1.0)  # the first upload is still going when every other call arrives
    with postgres_schema() as url, replicas(sandbox, workdir, url) as servers:
        answers: list[dict[str, Any]] = []

        async def agent(number: int) -> None:
            answers.append(answer(await call(servers[number % len(servers)][0], "submit_batch", SUBMIT)))

        with anyio.fail_after(DEADLINE_S):
            async with anyio.create_task_group() as agents:
                for number in range(50):
                    agents.start_soon(agent, number)
        assert sandbox.jobs() == 1 and sandbox.calls("create_batch") == 1
        assert len({a["batch"]["batch_id"] for a in answers}) == 1 and len(answers) == 50
        assert sorted(a["reused_existing_job"] for a in answers) == [False] + [True] * 49
        assert rows(url, "SELECT count(*), count(batch_id) FROM submissions") == [(1, 1)]
        assert rows(url, "SELECT count(*) FROM batches") == [(1,)]
        assert rows(url, "SELECT count(*) FROM claims") == [(0,)]  # every claim released


async def test_a_replica_killed_mid_submit_and_mid_wait_loses_nothing(standalone: Sandbox, workdir: Path) -> None:
    sandbox = standalone
    with postgres_schema() as url, replicas(sandbox, workdir, url) as servers:
        # 1. the first replica dies after planning the job and sending its create call, before the answer
        sandbox.slow("create_batch", 600)
        async with anyio.create_task_group() as tasks:  # the caller's call is abandoned with its replica
            tasks.start_soon(call, servers[0][0], "submit_batch", SUBMIT)
            await until(lambda: sandbox.calls("create_batch") == 1)
            [(holder,)] = rows(url, "SELECT pid FROM claims")
            assert holder == servers[0][1].pid
            os.kill(holder, signal.SIGKILL)
            tasks.cancel_scope.cancel()
        assert rows(url, "SELECT count(*), count(batch_id) FROM submissions") == [(1, 0)]  # planned, unanswered
        sandbox.slow("create_batch", 0)

        # the others take the submission over once its lease lapses, and replay it: still one job
        answers: list[dict[str, Any]] = []

        async def agent(base: str) -> None:
            answers.append(answer(await call(base, "submit_batch", SUBMIT)))

        with anyio.fail_after(DEADLINE_S):
            async with anyio.create_task_group() as agents:
                for number in range(6):
                    agents.start_soon(agent, servers[1 + number % 2][0])
        assert len({a["batch"]["batch_id"] for a in answers}) == 1 and sandbox.jobs() == 1
        assert rows(url, "SELECT count(*), count(batch_id) FROM submissions") == [(1, 1)]
        batch_id = answers[0]["batch"]["batch_id"]

        # 2. the second replica dies while it waits on the job; the third finishes and downloads it
        waits = sandbox.calls("get_batch")
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(call, servers[1][0], "wait_for_batch", {"batch_id": batch_id, "timeout_s": 120,
                                                                    "poll_interval_s": 0.2})
            await until(lambda: sandbox.calls("get_batch") > waits)
            servers[1][1].send_signal(signal.SIGKILL)
            tasks.cancel_scope.cancel()
        last = servers[2][0]
        waited = answer(await call(last, "wait_for_batch", {"batch_id": batch_id, "timeout_s": 120,
                                                             "poll_interval_s": 0.2}))
        assert waited["batch"]["status"] == "completed"
        downloaded = answer(await call(last, "download_batch_results", {"batch_id": batch_id}))
        assert downloaded["succeeded"] + downloaded["failed"] == 300
        assert sandbox.jobs() == 1 and rows(url, "SELECT count(*) FROM batches") == [(1,)]
        assert rows(url, "SELECT status, output_path IS NOT NULL FROM batches") == [("completed", True)]


async def test_any_replica_answers_any_call(standalone: Sandbox, workdir: Path) -> None:
    """Stateless replicas: a job submitted through the first is waited on through the second and downloaded
    through the third, as a load balancer may route one agent's calls."""
    with postgres_schema() as url, replicas(standalone, workdir, url) as servers:
        (first, _), (second, _), (third, _) = servers
        submitted = answer(await call(first, "submit_batch", SUBMIT))
        batch_id = submitted["batch"]["batch_id"]
        with anyio.fail_after(DEADLINE_S):
            while not (waited := answer(await call(second, "wait_for_batch", {
                    "batch_id": batch_id, "timeout_s": 10, "poll_interval_s": 0.2})))["batch"]["terminal"]:
                pass
        assert waited["batch"]["status"] == "completed"
        downloaded = answer(await call(third, "download_batch_results", {"batch_id": batch_id}))
        assert downloaded["succeeded"] + downloaded["failed"] == 300 and standalone.jobs() == 1
        assert rows(url, "SELECT status, output_path IS NOT NULL FROM batches") == [("completed", True)]


@pytest.mark.filterwarnings("ignore:resources/(un)?subscribe is removed")
async def test_a_subscriber_on_one_replica_hears_what_another_replica_saw(sandbox: SandboxServer,
                                                                         workdir: Path) -> None:
    """Two replicas in this process (each its own app state and store connections) on one database: the
    watcher subscribed on the first hears the job it never polled change status on the second."""
    heard: list[str] = []

    async def on_message(message: Any) -> None:
        if getattr(message, "method", None) == "notifications/resources/updated":
            heard.append(str(message.params.uri))

    with postgres_schema() as url:
        settings = settings_for(sandbox, workdir, store_url=url)
        async with AsyncExitStack() as stack:
            first = await stack.enter_async_context(open_app_state(settings))
            second = await stack.enter_async_context(open_app_state(settings))
            watcher = await stack.enter_async_context(Client(build_server(first), mode="legacy",
                                                             message_handler=on_message))
            worker = await stack.enter_async_context(Client(build_server(second), mode="legacy"))
            submitted = answer(await worker.call_tool("submit_batch", {**SUBMIT, "new": True}))
            batch_id = submitted["batch"]["batch_id"]
            await watcher.subscribe_resource(f"batch://jobs/{batch_id}")
            waited = answer(await worker.call_tool("wait_for_batch", {"batch_id": batch_id, "timeout_s": 60,
                                                                      "poll_interval_s": 0.05}))
            assert waited["batch"]["status"] == "completed"
            with anyio.fail_after(DEADLINE_S):
                while f"batch://jobs/{batch_id}" not in heard:
                    await anyio.sleep(0.05)
