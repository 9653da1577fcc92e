"""`serve --sandbox` under MCP clients that start a new server process per tool call (llama-index always,
langchain-mcp-adapters' ``client.get_tools()``): the embedded sandbox keeps its accounts, files and jobs on
disk under the state folder, so a job submitted by one process is seen, runs on, and downloads in the next,
and two processes at once share that state without corrupting it."""

from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client

from batch_mcp.backends.digitalocean import DigitalOceanBackend
from batch_mcp.domain import CreateSpec
from batch_mcp.sandbox import SandboxConfig, SandboxServer
from batch_mcp.sandbox.ledger import LEDGER_FILE

from conftest import fast_config
from test_stdio import free_port, stdio_server, wait_for_port

CORPUS = Path(__file__).parent / "corpus"
SMALL = "valid_openai_chat.jsonl"  # three requests
DEFAULT_PACE = SandboxConfig()
#: How long a three-request job takes at the embedded sandbox's own pace, from creation to completed.
RUNS_FOR_S = (DEFAULT_PACE.validating_s + DEFAULT_PACE.queued_s + 3 / DEFAULT_PACE.requests_per_s
              + DEFAULT_PACE.finalizing_s)


def sandbox_env(workdir: Path) -> dict[str, str]:
    """What an MCP host gives `serve --sandbox`: a state folder and an allowed folder, no key at all."""
    return {"BATCH_MCP_ALLOWED_DIRS": str(workdir), "BATCH_MCP_STATE_DIR": str(state_of(workdir)),
            "BATCH_MCP_LOG_LEVEL": "WARNING", "PATH": os.environ.get("PATH", "")}


def state_of(workdir: Path) -> Path:
    return workdir.parent / "state"


@pytest.fixture
def corpus(workdir: Path) -> Path:
    for name in (SMALL, "valid_anthropic.jsonl", "valid_openai_responses.jsonl"):
        shutil.copyfile(CORPUS / name, workdir / "data" / name)
    return workdir / "data"


def answer(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content[0].text
    structured: dict[str, Any] = result.structured_content
    return structured


async def one_call(workdir: Path, tool: str, **arguments: Any) -> dict[str, Any]:
    """A server process of its own for one tool call, which then exits: how those clients call a tool."""
    async with Client(stdio_server(sandbox_env(workdir), "--sandbox", cwd=workdir)) as client:
        return answer(await client.call_tool(tool, arguments))


def integrity(database: Path) -> str:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])


async def test_a_job_submitted_by_one_process_runs_on_and_downloads_in_later_ones(workdir: Path,
                                                                                 corpus: Path) -> None:
    submitted = await one_call(workdir, "submit_batch", path=f"data/{SMALL}")
    batch_id = submitted["batch"]["batch_id"]
    seen = await one_call(workdir, "get_batch", batch_id=batch_id)  # once a 404: the emulator had forgotten it
    assert seen["batch_id"] == batch_id and seen["total"] in (0, 3)

    await anyio.sleep(RUNS_FOR_S)  # no server process alive: the job runs on by the clock alone
    done = await one_call(workdir, "get_batch", batch_id=batch_id)
    assert done["status"] == "completed" and done["total"] == 3 and done["results_ready"]
    links = await one_call(workdir, "get_batch_results", batch_id=batch_id)
    assert links["output_file_url"].startswith("http://127.0.0.1:")
    summary = await one_call(workdir, "download_batch_results", batch_id=batch_id)  # links minted afresh here
    assert summary["succeeded"] + summary["failed"] == 3 and summary["missing"] == 0
    output = [json.loads(line) for line in Path(summary["output_path"]).read_text().splitlines()]
    assert {line["custom_id"] for line in output} <= {"req-1", "req-2", "req-3"}
    assert len(output) == summary["succeeded"]

    jobs = json.loads((await one_resource(workdir, "batch://jobs"))["text"])["jobs"]
    assert [job["batch_id"] for job in jobs] == [batch_id]
    for database in (state_of(workdir) / "sandbox" / "jobs.sqlite3",
                     state_of(workdir) / "sandbox" / "digitalocean" / LEDGER_FILE):
        assert integrity(database) == "ok"


async def one_resource(workdir: Path, uri: str) -> dict[str, Any]:
    async with Client(stdio_server(sandbox_env(workdir), "--sandbox", cwd=workdir)) as client:
        return {"text": (await client.read_resource(uri)).contents[0].text}


async def test_two_processes_at_once_share_the_sandbox_without_corrupting_it(workdir: Path, corpus: Path) -> None:
    """Each process submits two jobs at the same moment as the other, waits on them and downloads them; a
    third process then finds all four, and both SQLite files are intact."""
    finished: dict[str, dict[str, Any]] = {}

    async def job(client: Client, path: str) -> None:
        batch_id = answer(await client.call_tool("submit_batch", {"path": path, "new": True}))["batch"]["batch_id"]
        waited = answer(await client.call_tool("wait_for_batch", {"batch_id": batch_id, "timeout_s": 60,
                                                                  "poll_interval_s": 0.05}))
        assert waited["batch"]["status"] == "completed", waited
        finished[batch_id] = answer(await client.call_tool("download_batch_results", {"batch_id": batch_id}))

    async def process(paths: list[str]) -> None:
        async with Client(stdio_server(sandbox_env(workdir), "--sandbox", cwd=workdir)) as client, \
                anyio.create_task_group() as calls:
            for path in paths:
                calls.start_soon(job, client, path)

    async with anyio.create_task_group() as processes:
        processes.start_soon(process, [f"data/{SMALL}", "data/valid_anthropic.jsonl"])
        processes.start_soon(process, [f"data/{SMALL}", "data/valid_openai_responses.jsonl"])

    assert len(finished) == 4
    assert all(summary["succeeded"] + summary["failed"] == 3 for summary in finished.values())
    listed = json.loads((await one_resource(workdir, "batch://jobs"))["text"])["jobs"]
    assert {job["batch_id"] for job in listed} == set(finished)
    ledger = state_of(workdir) / "sandbox" / "digitalocean" / LEDGER_FILE
    assert integrity(ledger) == "ok" and integrity(state_of(workdir) / "sandbox" / "jobs.sqlite3") == "ok"
    with sqlite3.connect(f"file:{ledger}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT batch_id, results FROM jobs").fetchall()
    assert {f"digitalocean:{batch_id}" for batch_id, _ in rows} == set(finished) and all(results for _, results in rows)


# --- the emulators themselves, two on one folder ---------------------------------------------------


def backend_of(server: SandboxServer) -> DigitalOceanBackend:
    return DigitalOceanBackend(api_key=server.token, base_url=server.base_url)


def spec(ref: str, token: str) -> CreateSpec:
    from datetime import UTC, datetime

    return CreateSpec(input_ref=ref, line_format="openai", endpoint="/v1/chat/completions", client_token=token,
                      planned_at=datetime.now(UTC))


async def test_two_emulators_on_one_folder_are_one_account(tmp_path: Path) -> None:
    """Two on-demand emulators on one folder (as two server processes have): what one records the other
    answers, one idempotency key still makes one job, and results fetched from both at once are one set."""
    config = fast_config(storage_dir=tmp_path / "account", failure_rate=0.5)
    with SandboxServer(config, on_demand=True) as first, SandboxServer(config, on_demand=True) as second:
        one, other = backend_of(first), backend_of(second)
        try:
            staged = await one.upload(CORPUS / SMALL, "openai")
            made: list[str] = []

            async def create(backend: DigitalOceanBackend) -> None:
                made.append((await backend.create(spec(staged.ref, "same-key"))).id)

            async with anyio.create_task_group() as racing:
                racing.start_soon(create, one)
                racing.start_soon(create, other)
            assert made[0] == made[1] and first.sandbox.stats()["jobs"] == 1

            with anyio.fail_after(30):
                while (await other.get(made[0])).status != "completed":
                    await anyio.sleep(0.05)
            bodies: dict[int, bytes] = {}

            async def results_of(backend: DigitalOceanBackend) -> None:
                body = b""  # output and errors: at this failure rate all three fail one time in eight
                for source in await backend.results(made[0]):
                    sink = io.BytesIO()
                    await backend.download(source, sink)
                    body += sink.getvalue()
                bodies[id(backend)] = body

            async with anyio.create_task_group() as racing:
                racing.start_soon(results_of, one)
                racing.start_soon(results_of, other)
            first_body, second_body = bodies.values()
            assert first_body == second_body and first_body.count(b"\n") == 3
            kept = list(first.sandbox.results_dir.iterdir())
            assert len(kept) == len(first.sandbox.jobs[made[0]].results or {})  # the race's loser removed its own
        finally:
            await one.aclose()
            await other.aclose()


def test_an_on_demand_emulator_nobody_calls_builds_nothing(tmp_path: Path) -> None:
    with SandboxServer(SandboxConfig(storage_dir=tmp_path / "account"), on_demand=True) as server:
        assert server.base_url.startswith("http://127.0.0.1:")
        with pytest.raises(RuntimeError, match="not been called yet"):
            server.sandbox  # noqa: B018 - the property is what is tested
    assert not (tmp_path / "account").exists()


def test_an_on_demand_emulator_serves_its_admin_routes_first(tmp_path: Path) -> None:
    """Faults armed on an emulator that has not yet been called still fire: the admin call builds it."""
    with SandboxServer(SandboxConfig(storage_dir=tmp_path / "account"), on_demand=True) as server:
        headers = {"Authorization": f"Bearer {server.token}"}
        armed = httpx2.post(f"{server.origin}/_sandbox/faults", headers=headers,
                            json={"operation": "list_batches", "kind": "server_error"})
        assert armed.status_code == 204
        assert httpx2.get(f"{server.base_url}/v1/batches", headers=headers).status_code == 500
        assert httpx2.get(f"{server.base_url}/v1/batches", headers=headers).status_code == 200


async def test_the_sandbox_command_keeps_its_account_across_restarts_with_state_dir(tmp_path: Path) -> None:
    def start() -> tuple[subprocess.Popen[bytes], DigitalOceanBackend]:
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "batch_mcp", "sandbox", "--port", str(port), "--token", "t-1",
                                   "--state-dir", str(tmp_path / "account")],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(port)
        return server, DigitalOceanBackend(api_key="t-1", base_url=f"http://127.0.0.1:{port}")

    server, backend = start()
    try:
        staged = await backend.upload(CORPUS / SMALL, "openai")
        created = await backend.create(spec(staged.ref, "restart-key"))
    finally:
        await backend.aclose()
        server.terminate()
        server.wait(timeout=10)
    server, backend = start()  # another port, the same account
    try:
        assert (await backend.get(created.id)).id == created.id
        again = await backend.create(spec(staged.ref, "restart-key"))  # the idempotency key is remembered too
        assert again.id == created.id
    finally:
        await backend.aclose()
        server.terminate()
        server.wait(timeout=10)
