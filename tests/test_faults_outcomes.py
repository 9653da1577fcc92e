"""Faults that once ended in a wrong outcome, met through the MCP tools: a storage redirect taken for
success, a create answered 409 and re-sent forever, a wait running past its own deadline or ended by
a short error storm. Each must end in an answer that says what happened and what to do next."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import anyio
import httpx2
import pytest
from test_faults_mcp import SUBMIT, fast_retries, text

from batch_mcp.sandbox import SandboxServer
from batch_mcp.sandbox.pipeline import REDIRECT_HOST
from batch_mcp.services.workspace import sha256_of
from batch_mcp.store import JobStore

from conftest import mcp_session, settings_for


def creates_sent(sandbox: SandboxServer) -> int:
    return sum(record.operation == "create_batch" for record in sandbox.sandbox.requests)


async def finished_job(client: object) -> str:
    submitted = await client.call_tool("submit_batch", SUBMIT)  # type: ignore[attr-defined]
    assert not submitted.is_error, text(submitted)
    batch_id = submitted.structured_content["batch"]["batch_id"]
    waited = await client.call_tool("wait_for_batch", {"batch_id": batch_id, "timeout_s": 30,  # type: ignore[attr-defined]
                                                       "poll_interval_s": 0.05})
    assert waited.structured_content["batch"]["status"] == "completed", text(waited)
    return batch_id


def saved_results(workdir: Path) -> list[Path]:
    folder = workdir / "batch-results"
    return sorted(folder.iterdir()) if folder.exists() else []


# --- storage redirects ----------------------------------------------------------------------------


async def test_a_redirected_upload_is_an_error_and_is_not_remembered_as_uploaded(faulty: SandboxServer,
                                                                                 workdir: Path) -> None:
    """S3 answers 307 for a bucket in another region. Taken as success, nothing was stored yet the file
    was cached as uploaded, so every later submit of it failed, new=true included."""
    before = faulty.sandbox.stats()
    async with mcp_session(fast_retries(faulty, workdir)) as (client, state):
        faulty.sandbox.faults.fail_next("upload", "redirect")
        failed = await client.call_tool("submit_batch", SUBMIT)
        assert failed.is_error, text(failed)
        assert "HTTP 307" in text(failed) and f"redirect to {REDIRECT_HOST}" in text(failed), text(failed)
        assert "Nothing was transferred" in text(failed) and "signature" not in text(failed)
        sha = sha256_of(workdir / SUBMIT["path"])
        assert state.service.store.find_reusable_upload(sha, datetime.now(UTC)) is None
        assert faulty.sandbox.stats()["jobs"] == before["jobs"]

        again = await client.call_tool("submit_batch", SUBMIT)
        assert not again.is_error and not again.structured_content["reused_existing_job"], text(again)
        another = await client.call_tool("submit_batch", {**SUBMIT, "new": True})
        assert not another.is_error, text(another)
        assert another.structured_content["batch"]["batch_id"] != again.structured_content["batch"]["batch_id"]
    after = faulty.sandbox.stats()
    assert (after["jobs"], after["uploaded_files"]) == (before["jobs"] + 2, before["uploaded_files"] + 1)


async def test_a_redirected_download_saves_nothing_and_a_later_download_gets_everything(
        faulty: SandboxServer, workdir: Path) -> None:
    """Taken as success, a 307 saved an empty results file and the summary said to retry every request."""
    async with mcp_session(fast_retries(faulty, workdir)) as (client, state):
        batch_id = await finished_job(client)
        admin = httpx2.post(f"{faulty.base_url}/_sandbox/faults", json={"operation": "download", "kind": "redirect"},
                            headers={"Authorization": f"Bearer {faulty.token}"})
        assert admin.status_code == 204, admin.text
        failed = await client.call_tool("download_batch_results", {"batch_id": batch_id})
        assert failed.is_error and "HTTP 307" in text(failed) and "retry_failed_requests" not in text(failed)
        assert saved_results(workdir) == []
        assert state.service.store.get_job(batch_id).output_path is None

        downloaded = await client.call_tool("download_batch_results", {"batch_id": batch_id})
    assert not downloaded.is_error, text(downloaded)
    summary = downloaded.structured_content
    assert summary["succeeded"] > 0 and summary["missing"] == 0, summary


async def test_empty_result_files_for_finished_requests_are_never_summarised_as_retry_everything(
        faulty: SandboxServer, workdir: Path) -> None:
    """Storage serves empty files for a job that reports its requests finished: the download says it looks
    incomplete, keeps nothing, and retry_failed_requests does not pay for the requests again."""
    async with mcp_session(fast_retries(faulty, workdir)) as (client, _):
        batch_id = await finished_job(client)
        links = await client.call_tool("get_batch_results", {"batch_id": batch_id})  # the sandbox writes them
        assert not links.is_error, text(links)
        for path in faulty.sandbox.jobs[batch_id.partition(":")[2]].results.values():
            path.write_bytes(b"")
        jobs = faulty.sandbox.stats()["jobs"]

        failed = await client.call_tool("download_batch_results", {"batch_id": batch_id})
        assert failed.is_error and "looks incomplete" in text(failed) and "Download again" in text(failed)
        assert "do not retry" in text(failed) and saved_results(workdir) == []
        retried = await client.call_tool("retry_failed_requests", {"batch_id": batch_id})
        assert retried.is_error and "looks incomplete" in text(retried), text(retried)
    assert faulty.sandbox.stats()["jobs"] == jobs


# --- a create the API keeps answering 409 ---------------------------------------------------------


async def test_a_create_answered_409_again_and_again_stops_and_names_new_true(faulty: SandboxServer,
                                                                            workdir: Path) -> None:
    """409s are counted in the store, so restarts count too; after three the create is sent no more (not on
    submit, not on restart) and the agent is told new=true is the way out, which then works."""
    settings = fast_retries(faulty, workdir)
    jobs = faulty.sandbox.stats()["jobs"]
    faulty.sandbox.faults.fail_next("create_batch", "conflict", times=100)
    async with mcp_session(settings) as (client, state):
        for count in (1, 2):
            answer = await client.call_tool("submit_batch", SUBMIT)
            assert answer.is_error and f"409 Conflict ({count} of 3 allowed)" in text(answer), text(answer)
        (stuck,) = state.service.store.pending_submissions()
    async with mcp_session(settings) as (client, state):  # the restart re-sends it: the third 409
        with anyio.fail_after(10):
            while state.service.store.pending_submissions()[0].conflicts < 3:
                await anyio.sleep(0.02)
        sent = creates_sent(faulty)
        answer = await client.call_tool("submit_batch", SUBMIT)
        assert answer.is_error and "409 Conflict 3 times" in text(answer), text(answer)
        assert "no longer sent" in text(answer) and "new=true" in text(answer)
        assert "(not new=true)" not in text(answer)
        assert creates_sent(faulty) == sent
    async with mcp_session(settings) as (client, state):
        assert await state.service.resume_pending() == []
        assert creates_sent(faulty) == sent
        faulty.sandbox.faults.reset()
        fresh = await client.call_tool("submit_batch", {**SUBMIT, "new": True})
        assert not fresh.is_error, text(fresh)
        assert fresh.structured_content["request_id"] != stuck.request_id
        again = await client.call_tool("submit_batch", SUBMIT)
        assert again.structured_content["reused_existing_job"], text(again)
        assert again.structured_content["batch"]["batch_id"] == fresh.structured_content["batch"]["batch_id"]
    assert faulty.sandbox.stats()["jobs"] == jobs + 1


# --- the deadline of wait_for_batch ---------------------------------------------------------------


async def test_a_wait_ends_at_its_deadline_even_while_a_poll_is_in_flight(faulty: SandboxServer,
                                                                          workdir: Path) -> None:
    """Every poll takes 8 s to answer; with the default retries and 60 s timeouts, a 1 s wait once took
    as long as its polls. It answers timed_out with the status recorded at submit instead."""
    async with mcp_session(settings_for(faulty, workdir)) as (client, _):
        submitted = await client.call_tool("submit_batch", SUBMIT)
        faulty.sandbox.faults.slow("get_batch", 8)
        started = time.monotonic()
        waited = await client.call_tool("wait_for_batch", {"batch_id": submitted.structured_content["batch"]
                                                           ["batch_id"], "timeout_s": 1})
        elapsed = time.monotonic() - started
    assert not waited.is_error, text(waited)
    assert elapsed < 4, f"the 1 s wait took {elapsed:.1f} s"
    result = waited.structured_content
    assert result["timed_out"] and result["batch"]["status"] == submitted.structured_content["batch"]["status"]
    assert "last status seen" in result["next_step"] and "keeps running" in result["next_step"]


async def test_a_short_storm_of_500s_and_429s_is_ridden_out(faulty: SandboxServer, workdir: Path) -> None:
    """Four polls in a row exhaust their retries (two on 500s, two on 429s); the wait carries on."""
    async with mcp_session(fast_retries(faulty, workdir)) as (client, _):
        submitted = await client.call_tool("submit_batch", SUBMIT)
        faulty.sandbox.faults.fail_next("get_batch", "server_error", times=6)
        faulty.sandbox.faults.fail_next("get_batch", "rate_limit", times=6, retry_after_s=0)
        waited = await client.call_tool("wait_for_batch", {"batch_id": submitted.structured_content["batch"]
                                                           ["batch_id"], "timeout_s": 30, "poll_interval_s": 0.05})
    assert not waited.is_error, text(waited)
    assert not waited.structured_content["timed_out"] and waited.structured_content["batch"]["status"] == "completed"


@pytest.mark.parametrize(("kind", "retry_after_s", "said"), [("server_error", 0, "HTTP 500"),
                                                             ("rate_limit", 3600, "Retry after 3600 s")])
async def test_a_storm_longer_than_the_wait_ends_in_a_normal_timeout(faulty: SandboxServer, workdir: Path,
                                                                     kind: str, retry_after_s: int,
                                                                     said: str) -> None:
    async with mcp_session(fast_retries(faulty, workdir)) as (client, _):
        submitted = await client.call_tool("submit_batch", SUBMIT)
        faulty.sandbox.faults.fail_next("get_batch", kind, times=100_000, retry_after_s=retry_after_s)  # type: ignore[arg-type]
        started = time.monotonic()
        waited = await client.call_tool("wait_for_batch", {"batch_id": submitted.structured_content["batch"]
                                                           ["batch_id"], "timeout_s": 1, "poll_interval_s": 0.05})
        elapsed = time.monotonic() - started
    assert not waited.is_error, text(waited)
    assert waited.structured_content["timed_out"] and said in waited.structured_content["next_step"]
    assert elapsed < 4, f"the 1 s wait took {elapsed:.1f} s"


# --- a restart beside a server still making the job ------------------------------------------------


async def test_a_starting_server_leaves_a_create_another_server_is_making_to_it(faulty: SandboxServer,
                                                                                workdir: Path) -> None:
    """A server (or replica) that starts while another is still creating a job once re-sent that create: on
    the backends that find a lost create by its shape alone, a second paid job. Now it resends only under the
    submission's claim, so while the other holds it nothing is sent, and once it is free the job is made once."""
    settings = fast_retries(faulty, workdir)
    faulty.sandbox.faults.fail_next("create_batch", "conflict")
    async with mcp_session(settings) as (client, state):
        answer = await client.call_tool("submit_batch", SUBMIT)
        assert answer.is_error and "409 Conflict (1 of 3 allowed)" in text(answer), text(answer)
        (pending,) = state.service.store.pending_submissions()
    sent, jobs = creates_sent(faulty), faulty.sandbox.stats()["jobs"]
    with JobStore(settings.state_dir) as other_server:
        held = other_server.claim(pending.fingerprint, backend=pending.backend)
        assert held is not None
        async with mcp_session(settings) as (_, state):
            assert await state.service.resume_pending() == []
            assert creates_sent(faulty) == sent
            assert [s.request_id for s in state.service.store.pending_submissions()] == [pending.request_id]
            other_server.release_claim(held)
            (job,) = await state.service.resume_pending()
            assert await state.service.resume_pending() == []  # answered now: nothing left to send
    assert creates_sent(faulty) == sent + 1 and faulty.sandbox.stats()["jobs"] == jobs + 1
    assert job.id


async def test_a_running_server_makes_the_job_another_left_pending_without_being_asked(faulty: SandboxServer,
                                                                                      workdir: Path) -> None:
    """A replica that dies mid-submit leaves a planned create; no agent may ever submit that file again, so a
    running server sweeps for such creates (leased, one replica at a time) and makes the job, once."""
    watching = fast_retries(faulty, workdir, resume_interval_s=0.2)
    async with mcp_session(watching) as (_, watcher):
        jobs = faulty.sandbox.stats()["jobs"]
        faulty.sandbox.faults.fail_next("create_batch", "conflict")
        async with mcp_session(fast_retries(faulty, workdir, resume_interval_s=3600)) as (dying, _):
            answer = await dying.call_tool("submit_batch", SUBMIT)
            assert answer.is_error and "409 Conflict (1 of 3 allowed)" in text(answer), text(answer)
        with anyio.fail_after(10):
            while watcher.service.store.pending_submissions():
                await anyio.sleep(0.05)
        (record,) = watcher.service.store.list_jobs()
    assert faulty.sandbox.stats()["jobs"] == jobs + 1 and record.request_id is not None
