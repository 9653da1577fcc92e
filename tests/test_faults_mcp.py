"""Faults injected by the sandbox, met through the MCP tools: each job is created exactly once, no job
record is lost, and when retries run out the agent is told what happened and what to do next."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from test_http_transport import http_server_process

from batch_mcp.backends.http import CHUNK_BYTES, HttpClient, HttpOptions
from batch_mcp.backends.retries import RetryPolicy
from batch_mcp.config import Settings
from batch_mcp.sandbox import SandboxServer
from batch_mcp.sandbox.faults import OPERATIONS, FaultPlan
from batch_mcp.services.workspace import NewFile

from conftest import fast_config, mcp_session, settings_for
from test_stdio import server_env

#: Every operation that submit, wait and download use.
WORKFLOW_OPERATIONS = [operation for operation in OPERATIONS if operation != "cancel_batch"]
SUBMIT = {"path": "data/tickets.jsonl"}


def fast_retries(sandbox: SandboxServer, workdir: Path, **overrides: Any) -> Settings:
    """Three attempts with millisecond backoff, so exhausting retries takes no time."""
    return settings_for(sandbox, workdir, **{"max_attempts": 3, "retry_base_delay_s": 0.01, **overrides})


def text(result: Any) -> str:
    return result.content[0].text


async def tracked_jobs(client: Client) -> dict[str, dict[str, Any]]:
    """The jobs this server recorded, from the batch://jobs resource (its first page)."""
    listing = json.loads((await client.read_resource("batch://jobs")).contents[0].text)
    return {job["batch_id"]: job for job in listing["jobs"]}


async def submit_wait_download(client: Client) -> str:
    submitted = await client.call_tool("submit_batch", SUBMIT)
    assert not submitted.is_error, text(submitted)
    batch_id = submitted.structured_content["batch"]["batch_id"]
    waited = await client.call_tool("wait_for_batch", {"batch_id": batch_id, "timeout_s": 30,
                                                       "poll_interval_s": 0.05})
    assert not waited.is_error and waited.structured_content["batch"]["status"] == "completed", text(waited)
    downloaded = await client.call_tool("download_batch_results", {"batch_id": batch_id})
    assert not downloaded.is_error, text(downloaded)
    for line in Path(downloaded.structured_content["output_path"]).read_text().splitlines():
        json.loads(line)  # no fragment of a dropped attempt is left in the file
    return batch_id


@pytest.mark.parametrize("kind", ["rate_limit", "server_error", "drop"])
async def test_transient_faults_on_every_call_are_ridden_out(faulty: SandboxServer, workdir: Path,
                                                             kind: str) -> None:
    """Two 429s (retry-after 0), 500s or dropped connections before every call: the workflow still
    completes, the upload and the job happen once each, and the job stays listed."""
    for operation in WORKFLOW_OPERATIONS:
        faulty.sandbox.faults.fail_next(operation, kind, times=2, retry_after_s=0)  # type: ignore[arg-type]
    before = faulty.sandbox.stats()
    async with mcp_session(fast_retries(faulty, workdir)) as (client, _):
        batch_id = await submit_wait_download(client)
        assert batch_id in await tracked_jobs(client)
    after = faulty.sandbox.stats()
    assert (after["jobs"], after["uploaded_files"]) == (before["jobs"] + 1, before["uploaded_files"] + 1)


async def test_retry_after_is_waited_out(faulty: SandboxServer, workdir: Path) -> None:
    async with mcp_session(fast_retries(faulty, workdir)) as (client, _):
        batch_id = (await client.call_tool("submit_batch", SUBMIT)).structured_content["batch"]["batch_id"]
        faulty.sandbox.faults.fail_next("get_batch", "rate_limit", times=1, retry_after_s=1)
        started = time.monotonic()
        result = await client.call_tool("get_batch", {"batch_id": batch_id})
    assert not result.is_error and time.monotonic() - started >= 1.0


Arm = Callable[[FaultPlan], None]
#: name -> (how the sandbox misbehaves, the tool that meets it, what the agent must be told)
EXHAUSTED: dict[str, tuple[Arm, str, tuple[str, ...]]] = {
    "429 storm": (lambda f: f.fail_next("get_batch", "rate_limit", times=10, retry_after_s=3600), "get_batch",
                  ("HTTP 429", "Retry after 3600 s", "Wait a minute")),
    "5xx burst": (lambda f: f.fail_next("get_batch", "server_error", times=10), "get_batch",
                  ("HTTP 500", "try again in a few minutes")),
    "dropped connections": (lambda f: f.fail_next("get_batch", "drop", times=10), "get_batch",
                            ("connection failed after 3 attempts", "Check the network")),
    "answers slower than the timeout": (lambda f: f.slow("get_batch", 1.0), "get_batch",
                                        ("no answer within the timeout after 3 attempts", "try again later")),
    "drops during the upload": (lambda f: f.fail_next("upload", "drop", times=10), "submit_batch",
                                ("upload", "connection failed after 3 attempts", "Check the network")),
    "upload URLs that expire": (lambda f: setattr(f, "upload_url_ttl_s", 1e-6), "submit_batch",
                                ("upload links", "expired", "fetches fresh upload links")),
}


@pytest.mark.parametrize("case", list(EXHAUSTED))
async def test_exhausted_retries_are_explained_and_nothing_is_duplicated(faulty: SandboxServer, workdir: Path,
                                                                         case: str) -> None:
    arm, tool, phrases = EXHAUSTED[case]
    async with mcp_session(fast_retries(faulty, workdir, timeout_s=0.25)) as (client, _):
        if tool == "get_batch":
            submitted = await client.call_tool("submit_batch", SUBMIT)
            arguments = {"batch_id": submitted.structured_content["batch"]["batch_id"]}
        else:
            arguments = SUBMIT
        before = faulty.sandbox.stats()
        arm(faulty.sandbox.faults)
        failed = await client.call_tool(tool, arguments)
        assert failed.is_error and all(phrase in text(failed) for phrase in phrases), text(failed)
        assert faulty.sandbox.stats()["jobs"] == before["jobs"]
        assert faulty.sandbox.stats()["uploaded_files"] == before["uploaded_files"]
        faulty.sandbox.faults.reset()
        retried = await client.call_tool(tool, arguments)
        assert not retried.is_error, text(retried)
    assert faulty.sandbox.stats()["jobs"] == before["jobs"] + (tool == "submit_batch")


async def test_upload_url_expiring_mid_upload_gets_a_new_one(faulty: SandboxServer, workdir: Path) -> None:
    """The URL expires while the PUT is in flight: storage refuses it, a fresh URL is fetched, one job results."""
    faults, log = faulty.sandbox.faults, faulty.sandbox.requests
    faults.slow("upload", 0.4)
    start, before = len(log), faulty.sandbox.stats()
    async with mcp_session(fast_retries(faulty, workdir)) as (client, _):

        async def expire_once_uploading() -> None:
            while not any(r.operation == "upload" for r in log[start:]):
                await anyio.sleep(0.01)
            faulty.sandbox.expire_upload_urls()
            faults.slow("upload", 0)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(expire_once_uploading)
            submitted = await client.call_tool("submit_batch", SUBMIT)
    assert not submitted.is_error, text(submitted)
    after = faulty.sandbox.stats()
    assert after["files"] - before["files"] == 2  # the expired intent and its replacement
    assert (after["uploaded_files"], after["jobs"]) == (before["uploaded_files"] + 1, before["jobs"] + 1)


@pytest.mark.parametrize("recovery", ["submit again", "restart"])
@pytest.mark.parametrize("lost", ["connection dropped", "crash before recording"])
async def test_a_lost_create_answer_never_makes_a_second_job(faulty: SandboxServer, workdir: Path,
                                                             monkeypatch: pytest.MonkeyPatch, lost: str,
                                                             recovery: str) -> None:
    """The create call's answer never gets recorded: every attempt's connection drops (no job yet), or the
    answer arrives and the server dies before storing it (the job exists). A repeated submit_batch, or a
    restarted server (resume_pending), re-sends the same request_id: exactly one job, still listed."""
    settings = fast_retries(faulty, workdir)
    before = faulty.sandbox.stats()["jobs"]
    async with mcp_session(settings) as (client, state):
        if lost == "connection dropped":
            faulty.sandbox.faults.fail_next("create_batch", "drop", times=10)
        else:
            monkeypatch.setattr(state.service.store, "attach_batch", _crash)
        failed = await client.call_tool("submit_batch", SUBMIT)
        assert failed.is_error
        if lost == "connection dropped":
            assert "may or may not exist" in text(failed) and "same arguments (not new=true)" in text(failed)
        assert faulty.sandbox.stats()["jobs"] == before + (lost == "crash before recording")
        (pending,) = state.service.store.pending_submissions()
        faulty.sandbox.faults.reset()
        monkeypatch.undo()
        if recovery == "submit again":
            again = await client.call_tool("submit_batch", SUBMIT)
            assert not again.is_error and again.structured_content["reused_existing_job"], text(again)
    if recovery == "restart":
        async with mcp_session(settings) as (client, state):  # open_app_state resumes them, in the background
            with anyio.fail_after(10):
                while state.service.store.pending_submissions():
                    await anyio.sleep(0.02)
            again = await client.call_tool("submit_batch", SUBMIT)
    batch_id = again.structured_content["batch"]["batch_id"]
    assert faulty.sandbox.jobs[batch_id.partition(":")[2]].request.request_id == pending.request_id
    assert faulty.sandbox.stats()["jobs"] == before + 1
    async with mcp_session(settings) as (client, _):
        assert batch_id in await tracked_jobs(client)


def _crash(*_: object) -> None:
    raise RuntimeError("the server died after the API answered, before the answer was stored")


async def test_server_killed_mid_wait_and_restarted_keeps_the_job(workdir: Path) -> None:
    """kill -9 the HTTP server during wait_for_batch; a new process on the same state folder still lists the
    job, waits on it and downloads it, and the account holds exactly one job."""
    with SandboxServer(fast_config(requests_per_s=300)) as slow:
        env = server_env(slow, workdir)
        log = slow.sandbox.requests
        with http_server_process(env, workdir) as (base, process):
            async with Client(base + "/mcp") as client:
                submitted = await client.call_tool("submit_batch", SUBMIT)
            batch_id = submitted.structured_content["batch"]["batch_id"]
            polls_before = sum(r.operation == "get_batch" for r in log)

            async def kill_once_polling() -> None:
                while sum(r.operation == "get_batch" for r in log) < polls_before + 2:
                    await anyio.sleep(0.01)
                process.send_signal(signal.SIGKILL)

            with anyio.fail_after(20):
                try:
                    async with anyio.create_task_group() as tasks, Client(base + "/mcp") as client:
                        tasks.start_soon(kill_once_polling)
                        outcome: object = await client.call_tool("wait_for_batch", {
                            "batch_id": batch_id, "timeout_s": 30, "poll_interval_s": 0.05})
                except Exception as exc:  # the client's transport fails when its server dies
                    outcome = exc
            assert isinstance(outcome, Exception), "the wait ended before the server was killed"
            assert process.wait(timeout=5) == -signal.SIGKILL
        with http_server_process(env, workdir) as (base, _):
            async with Client(base + "/mcp") as client:
                assert batch_id in await tracked_jobs(client)
                waited = await client.call_tool("wait_for_batch", {"batch_id": batch_id, "timeout_s": 30,
                                                                   "poll_interval_s": 0.05})
                assert waited.structured_content["batch"]["status"] == "completed", text(waited)
                downloaded = await client.call_tool("download_batch_results", {"batch_id": batch_id})
                assert not downloaded.is_error, text(downloaded)
        assert slow.sandbox.stats()["jobs"] == 1


async def test_a_download_dropped_midway_leaves_no_fragment(tmp_path: Path) -> None:
    """The sandbox drops a download before any byte arrives; a real network can drop it midway. The retry
    must start the file over, not append to the fragment already written."""
    body = b"".join(b'{"custom_id": "r-%d"}\n' % i for i in range(CHUNK_BYTES // 16))  # over one chunk
    attempts = 0

    async def fragment_then_drop() -> AsyncIterator[bytes]:
        yield body[:CHUNK_BYTES + 7]  # the first chunk reaches the file
        raise httpx2.ReadError("connection reset midway")

    def storage(request: httpx2.Request) -> httpx2.Response:
        nonlocal attempts
        attempts += 1
        return httpx2.Response(200, content=fragment_then_drop() if attempts == 1 else body)

    client = HttpClient(backend="digitalocean", base_url="https://api.example", credentials={},
                        options=HttpOptions(retry=RetryPolicy(base_delay_s=0.01)))
    await client.aclose()  # swap its pooled HTTP client for one that plays the storage service
    client._http = httpx2.AsyncClient(transport=httpx2.MockTransport(storage))
    with NewFile(tmp_path / "out.jsonl") as new:
        await client.download("download", "https://storage.example/out.jsonl?signature=x", new.out,
                              authenticated=False)
    await client.aclose()
    assert attempts == 2 and (tmp_path / "out.jsonl").read_bytes() == body
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]
