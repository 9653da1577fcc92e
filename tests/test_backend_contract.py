"""Every backend against its emulator over loopback HTTP: the OpenAI family (OpenAI, DeepInfra, Groq) and
DigitalOcean in both its wire dialects.

One module, parametrized over them: upload (streamed) -> create -> get -> list paging -> cancel -> results
-> download, the faults per operation, and one job per submission whatever happens to the create. Where
exactly-once works differently the tests say so: without an idempotency key (the OpenAI family) a create
whose answer is lost is found again by ``recover`` and never sent twice; with DigitalOcean's ``request_id``
a resend is safe and ``recover`` is that resend. Each emulator runs on a frozen clock the tests advance,
so nothing depends on how fast this machine is.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from batch_mcp.backends.base import (
    TOKEN_METADATA_KEY,
    AuthenticationError,
    Backend,
    CreateNotConfirmed,
    InvalidRequestError,
    NotFoundError,
    RecoveryInconclusive,
    ResultsNotReady,
)
from batch_mcp.backends.digitalocean import DigitalOceanBackend
from batch_mcp.backends.http import HttpOptions
from batch_mcp.backends.openai_compat import VARIANTS, OpenAICompatBackend
from batch_mcp.backends.openai_compat import backend as compat_backend
from batch_mcp.backends.retries import RetryPolicy
from batch_mcp.domain import CreateSpec, Job, JobPage, JobStatus
from batch_mcp.sandbox import SandboxConfig, SandboxServer
from batch_mcp.services import once

CHAT = "/v1/chat/completions"
FAST = HttpOptions(retry=RetryPolicy(max_attempts=3, base_delay_s=0.01, max_delay_s=0.05), timeout_s=30.0)


DIALECTS = ("openapi", "godo")


@pytest.fixture(scope="module", params=[*VARIANTS, *(f"digitalocean-{dialect}" for dialect in DIALECTS)])
def emulator(request: pytest.FixtureRequest) -> Iterator[SandboxServer]:
    name, _, dialect = request.param.partition("-")
    config = SandboxConfig(backend=name, dialect=dialect or "openapi", validating_s=1, queued_s=1,
                           requests_per_s=10, finalizing_s=1, cancelling_s=1, failure_rate=0.0,
                           rate_limit_per_minute=1_000_000)
    with SandboxServer(config) as server:
        server.sandbox.clock.freeze()
        yield server


def open_backend(emulator: SandboxServer, api_key: str) -> Backend:
    name = emulator.sandbox.config.backend
    if name == "digitalocean":
        return DigitalOceanBackend(api_key=api_key, base_url=emulator.base_url, options=FAST)
    return OpenAICompatBackend(VARIANTS[name], api_key=api_key, base_url=emulator.base_url, options=FAST)


@pytest.fixture
async def backend(emulator: SandboxServer) -> AsyncIterator[Backend]:
    emulator.sandbox.faults.reset()
    opened = open_backend(emulator, emulator.token)
    yield opened
    await opened.aclose()


def godo(emulator: SandboxServer) -> bool:
    """godo's shape carries no metadata, endpoint or job errors."""
    return emulator.sandbox.config.backend == "digitalocean" and emulator.sandbox.config.dialect == "godo"


def keyless(backend: Backend) -> bool:
    """No idempotency key: a create is sent once, and a lost answer is found by listing."""
    return backend.capabilities.idempotency == "metadata_tag"


def needs_metadata_tag(backend: Backend) -> None:
    if not keyless(backend):
        pytest.skip(f"{backend.capabilities.label} replays its request_id: a resend is safe, recover is a resend")


async def past_validation(emulator: SandboxServer, backend: Backend, job_id: str) -> None:
    """DigitalOcean refuses a cancel before the job reached its provider; the others take one any time."""
    if backend.name == "digitalocean":
        while (await backend.get(job_id)).status is JobStatus.VALIDATING:
            emulator.sandbox.clock.advance(0.5)


@pytest.fixture
def requests_file(tmp_path: Path) -> Path:
    path = tmp_path / "requests.jsonl"
    lines = [{"custom_id": f"r{i}", "method": "POST", "url": CHAT,
              "body": {"model": "m-1", "messages": [{"role": "user", "content": f"ticket {i}"
                                                     + (" [[fail]]" if i == 2 else "")}]}} for i in range(6)]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def planned(input_ref: str, **overrides: Any) -> CreateSpec:
    values: dict[str, Any] = dict(input_ref=input_ref, line_format="openai", endpoint=CHAT,
                                  client_token=f"tok_{uuid.uuid4().hex}", planned_at=datetime.now(UTC))
    values.update(overrides)
    return CreateSpec(**values)


def creates(server: SandboxServer) -> int:
    return sum(record.operation == "create_batch" for record in server.sandbox.requests)


def jobs_with(server: SandboxServer, token: str) -> list[str]:
    """The emulator's jobs carrying our submission token (as DO's request_id, or in the metadata)."""
    return [job.batch_id for job in server.sandbox.jobs.values()
            if getattr(job.request, "request_id", None) == token
            or (job.request.metadata or {}).get(TOKEN_METADATA_KEY) == token]


async def finish(server: SandboxServer, backend: Backend, job_id: str) -> Job:
    """Poll, moving the frozen clock half a second between polls, until the job has ended."""
    for _ in range(200):
        job = await backend.get(job_id)
        if job.is_terminal:
            return job
        server.sandbox.clock.advance(0.5)
    raise AssertionError(f"{job_id} did not end")


async def create_once(backend: Backend, spec: CreateSpec) -> Job:
    """What the submit workflow does: create; on a lost answer, recover before anything is sent again."""
    return await once.create_once(backend, spec, looks=2, pause_s=0)


# --- the round trip -------------------------------------------------------------------------------


async def test_upload_create_poll_results_download(emulator: SandboxServer, backend: Backend,
                                                   requests_file: Path, tmp_path: Path) -> None:
    progress: list[tuple[int, int]] = []

    async def on_progress(done: int, total: int) -> None:
        progress.append((done, total))

    staged = await backend.upload(requests_file, "openai", on_progress)
    size = requests_file.stat().st_size
    assert (staged.backend, staged.bytes, staged.filename) == (backend.name, size, "requests.jsonl")
    assert progress[-1] == (size, size) and staged.reusable

    spec = planned(staged.ref, metadata={"team": "support"})
    job = await backend.create(spec)
    assert (job.backend, job.status, job.input_ref, job.endpoint) == (backend.name, JobStatus.VALIDATING,
                                                                       staged.ref, None if godo(emulator) else CHAT)
    assert job.client_token == spec.client_token
    assert job.metadata == ({} if godo(emulator) else {"team": "support"})
    assert jobs_with(emulator, spec.client_token) == [job.id]
    with pytest.raises(ResultsNotReady):
        await backend.results(job.id)

    ended = await finish(emulator, backend, job.id)
    assert ended.status is JobStatus.COMPLETED and ended.results_ready
    assert ended.counts is not None and (ended.counts.total, ended.counts.succeeded, ended.counts.failed) == (6, 5, 1)

    sources = await backend.results(job.id)
    assert [source.kind for source in sources] == ["output", "errors"]
    ids: dict[str, list[str]] = {}
    for source in sources:
        dest = tmp_path / f"{source.kind}.jsonl"
        with dest.open("wb") as out:
            written = await backend.download(source, out)
        assert written == dest.stat().st_size > 0
        ids[source.kind] = sorted(json.loads(line)["custom_id"] for line in dest.read_text().splitlines())
    assert ids == {"output": ["r0", "r1", "r3", "r4", "r5"], "errors": ["r2"]}
    presigned = {"upload", "download"} if backend.capabilities.upload == "presigned" else set()
    assert all(record.authorization is (record.operation not in presigned) for record in emulator.sandbox.requests)


async def test_counts_while_validating_follow_the_variant(emulator: SandboxServer, backend: Backend,
                                                          requests_file: Path) -> None:
    """DeepInfra sends ``request_counts: null`` while validating: counts are unknown, not zero."""
    job = await backend.create(planned((await backend.upload(requests_file, "openai")).ref))
    assert (job.counts is None) is (backend.name == "deepinfra")


async def test_a_malformed_file_fails_with_line_numbers(emulator: SandboxServer, backend: Backend,
                                                        tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m"}}\n'
                    "this is not json\n")
    job = await backend.create(planned((await backend.upload(path, "openai")).ref))
    ended = await finish(emulator, backend, job.id)
    assert ended.status is JobStatus.FAILED and not ended.results_ready
    assert godo(emulator) or 2 in [error.line for error in ended.errors]
    assert await backend.results(job.id) == []


async def test_list_pages_newest_first_and_filters_by_status(emulator: SandboxServer, backend: Backend,
                                                             requests_file: Path) -> None:
    ref = (await backend.upload(requests_file, "openai")).ref
    made = [(await backend.create(planned(ref))).id for _ in range(5)]
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(100):
        page: JobPage = await backend.list(limit=2, cursor=cursor)
        assert len(page.jobs) <= 2
        seen += [job.id for job in page.jobs]
        if not page.has_more:
            break
        cursor = page.next_cursor
    assert seen[:5] == made[::-1] and len(seen) == len(set(seen)) == len(emulator.sandbox.jobs)
    validating = await backend.list(status=JobStatus.VALIDATING, limit=100)
    assert {job.id for job in validating.jobs} >= set(made)
    assert all(job.status is JobStatus.VALIDATING for job in validating.jobs)


async def test_cancel_ends_cancelled(emulator: SandboxServer, backend: Backend,
                                     requests_file: Path) -> None:
    job = await backend.create(planned((await backend.upload(requests_file, "openai")).ref))
    await past_validation(emulator, backend, job.id)
    cancelling = await backend.cancel(job.id)
    assert cancelling.status in (JobStatus.CANCELLING, JobStatus.CANCELLED)
    assert (await finish(emulator, backend, job.id)).status is JobStatus.CANCELLED
    await backend.results(job.id)  # an ended job: whatever it finished, possibly nothing


async def test_refusals_are_typed(emulator: SandboxServer, backend: Backend) -> None:
    with pytest.raises(NotFoundError, match="batch_missing"):
        await backend.get("batch_missing")
    with pytest.raises(NotFoundError):
        await backend.create(planned("file-missing"))
    wrong = open_backend(emulator, "wrong")
    try:
        with pytest.raises(AuthenticationError):
            await wrong.list()
    finally:
        await wrong.aclose()


async def test_what_the_backend_does_not_run_is_refused_before_sending(emulator: SandboxServer,
                                                                       backend: Backend) -> None:
    before = creates(emulator)
    with pytest.raises(InvalidRequestError, match="completion window"):
        await backend.create(planned("file-1", completion_window="8d"))
    if backend.capabilities.reserved_metadata_keys:
        with pytest.raises(InvalidRequestError, match="reserved"):
            await backend.create(planned("file-1", metadata={TOKEN_METADATA_KEY: "x"}))
    assert creates(emulator) == before


async def test_groq_takes_windows_up_to_seven_days(emulator: SandboxServer, backend: Backend,
                                                   requests_file: Path) -> None:
    spec = planned((await backend.upload(requests_file, "openai")).ref, completion_window="7d")
    if backend.name != "groq":
        with pytest.raises(InvalidRequestError, match="24h"):
            await backend.create(spec)
        return
    assert (await backend.create(spec)).completion_window == "7d"


# --- faults on calls that are safe to repeat --------------------------------------------------------


@pytest.mark.parametrize("kind", ["server_error", "drop", "rate_limit"])
async def test_repeatable_calls_ride_out_faults(emulator: SandboxServer, backend: Backend,
                                                requests_file: Path, tmp_path: Path, kind: str) -> None:
    faults = emulator.sandbox.faults
    operations = [op for op in ("create_file", "upload", "get_batch", "list_batches", "cancel_batch", "download")
                  if op in faults.operations]
    for operation in operations:
        faults.fail_next(operation, kind, retry_after_s=0)  # type: ignore[arg-type]
    staged = await backend.upload(requests_file, "openai")
    doomed = await backend.create(planned(staged.ref))
    await past_validation(emulator, backend, doomed.id)
    assert (await backend.cancel(doomed.id)).is_terminal is False
    job = await backend.create(planned(staged.ref))
    assert (await backend.get(job.id)).id == job.id
    assert job.id in [listed.id for listed in (await backend.list(limit=100)).jobs]
    await finish(emulator, backend, job.id)
    output = next(source for source in await backend.results(job.id) if source.kind == "output")
    dest = tmp_path / "out.jsonl"
    with dest.open("wb") as out:
        await backend.download(output, out)
    assert len(dest.read_text().splitlines()) == 5
    assert all(faults.take(operation) is None for operation in operations)  # each fired


# --- exactly once -------------------------------------------------------------------------------------


async def test_a_lost_create_answer_is_recovered_as_the_same_job(emulator: SandboxServer, backend: Backend,
                                                                 requests_file: Path) -> None:
    """Without a key the create is sent once; with DO's request_id the loop resends it until it gives up.
    Either way the job exists once, and ``recover`` finds it."""
    spec = planned((await backend.upload(requests_file, "openai")).ref)
    sends = 1 if keyless(backend) else FAST.retry.max_attempts
    emulator.sandbox.faults.fail_next("create_batch", "lost_answer", times=sends)
    before = creates(emulator)
    with pytest.raises(CreateNotConfirmed) as caught:
        await backend.create(spec)
    assert caught.value.client_token == spec.client_token
    assert creates(emulator) == before + sends
    made = jobs_with(emulator, spec.client_token)
    assert len(made) == 1
    found = await backend.recover(spec)
    assert found is not None and found.id == made[0] and found.client_token == spec.client_token


@pytest.mark.parametrize(("kind", "sent"), [("lost_answer", 1), ("server_error", 2), ("drop", 2)])
async def test_one_job_per_submission_whatever_happens_to_the_create(emulator: SandboxServer,
                                                                     backend: Backend,
                                                                     requests_file: Path, kind: str,
                                                                     sent: int) -> None:
    """A 500 or a drop before the service acted, or a lost answer after it did:
    create -> recover -> (create only if nothing was found) makes exactly one job. With a request_id
    every fault is simply resent once, and the resend answers with the one job."""
    spec = planned((await backend.upload(requests_file, "openai")).ref)
    emulator.sandbox.faults.fail_next("create_batch", kind)  # type: ignore[arg-type]
    before = creates(emulator)
    job = await create_once(backend, spec)
    assert creates(emulator) == before + (sent if keyless(backend) else 2)
    assert jobs_with(emulator, spec.client_token) == [job.id]
    recovered = await backend.recover(spec)
    assert recovered is not None and recovered.id == job.id


@pytest.mark.parametrize("kind", ["server_error", "drop"])
async def test_a_create_answered_5xx_or_cut_off_is_not_sent_again(emulator: SandboxServer,
                                                                  backend: Backend,
                                                                  requests_file: Path, kind: str) -> None:
    needs_metadata_tag(backend)
    spec = planned((await backend.upload(requests_file, "openai")).ref)
    emulator.sandbox.faults.fail_next("create_batch", kind)  # type: ignore[arg-type]
    before = creates(emulator)
    with pytest.raises(CreateNotConfirmed, match="may or may not exist"):
        await backend.create(spec)
    assert creates(emulator) == before + 1
    assert await backend.recover(spec) is None  # it did not take effect: now creating again is safe


async def test_a_create_refused_with_429_is_sent_again(emulator: SandboxServer, backend: Backend,
                                                       requests_file: Path) -> None:
    spec = planned((await backend.upload(requests_file, "openai")).ref)
    emulator.sandbox.faults.fail_next("create_batch", "rate_limit", times=2, retry_after_s=0)
    before = creates(emulator)
    job = await backend.create(spec)
    assert creates(emulator) == before + 3
    assert jobs_with(emulator, spec.client_token) == [job.id]


async def test_recover_pages_back_to_the_planned_time_and_no_further(emulator: SandboxServer,
                                                                     backend: Backend,
                                                                     requests_file: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    needs_metadata_tag(backend)
    monkeypatch.setattr(compat_backend, "LIST_PAGE_MAX", 2)
    ref = (await backend.upload(requests_file, "openai")).ref
    target = planned(ref)
    emulator.sandbox.faults.fail_next("create_batch", "lost_answer")
    with pytest.raises(CreateNotConfirmed):
        await backend.create(target)
    for _ in range(5):  # newer batches push ours to the third page
        emulator.sandbox.clock.advance(1)
        await backend.create(planned(ref))
    lists = sum(record.operation == "list_batches" for record in emulator.sandbox.requests)
    found = await backend.recover(target)
    assert found is not None and found.client_token == target.client_token
    assert sum(record.operation == "list_batches" for record in emulator.sandbox.requests) - lists == 3

    future = planned(ref, planned_at=datetime.now(UTC) + timedelta(days=1))
    lists = sum(record.operation == "list_batches" for record in emulator.sandbox.requests)
    assert await backend.recover(future) is None
    assert sum(record.operation == "list_batches" for record in emulator.sandbox.requests) - lists == 1


class MetadataDroppingGateway(OpenAICompatBackend):
    """A compatible gateway that loses batch metadata: our token never comes back."""

    async def list(self, status: JobStatus | None = None, limit: int = 20, cursor: str | None = None) -> JobPage:
        page = await super().list(status, limit, cursor)
        return page.model_copy(update={"jobs": [job.model_copy(update={"client_token": None}) for job in page.jobs]})


async def test_without_metadata_one_matching_batch_is_ours_and_several_are_reported(
        emulator: SandboxServer, backend: Backend, requests_file: Path, tmp_path: Path) -> None:
    needs_metadata_tag(backend)
    gateway = MetadataDroppingGateway(VARIANTS[backend.name], api_key=emulator.token, base_url=emulator.base_url,
                                      options=FAST)
    try:
        emulator.sandbox.clock.advance(3600)  # past every batch of earlier tests
        ref = (await backend.upload(requests_file, "openai")).ref
        spec = planned(ref, planned_at=datetime.fromtimestamp(emulator.sandbox.clock.now(), UTC))
        emulator.sandbox.faults.fail_next("create_batch", "lost_answer")
        with pytest.raises(CreateNotConfirmed):
            await gateway.create(spec)
        found = await gateway.recover(spec)
        assert found is not None and found.id == jobs_with(emulator, spec.client_token)[0]
        other = await backend.create(planned(ref))
        with pytest.raises(RecoveryInconclusive) as caught:
            await gateway.recover(spec)
        assert set(caught.value.candidates) == {found.id, other.id}
        another_file = (await backend.upload(requests_file, "openai")).ref
        assert await gateway.recover(planned(another_file, planned_at=spec.planned_at)) is None
    finally:
        await gateway.aclose()


async def test_recover_ignores_batches_of_other_submissions(emulator: SandboxServer, backend: Backend,
                                                            requests_file: Path) -> None:
    """The service keeps metadata, so a batch on the same file with another token is someone else's."""
    needs_metadata_tag(backend)
    ref = (await backend.upload(requests_file, "openai")).ref
    await backend.create(planned(ref))
    assert await backend.recover(planned(ref, planned_at=datetime.now(UTC) - timedelta(minutes=1))) is None
