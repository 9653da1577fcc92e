"""The DigitalOcean backend against today's DO sandbox over real loopback HTTP, in both wire dialects:
every operation, every injected fault, the token only on the API host, presigned links without it, a
redirect explained, refused links renewed once, 412 as not ready, and the registry opening it from
DigitalOcean's own variables. Its pure parts (``to_job``, pages, links) are in test_digitalocean_wire.py."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from batch_mcp.backends.base import (
    AuthenticationError,
    ConflictError,
    ConnectionFailed,
    CreateNotConfirmed,
    InvalidRequestError,
    LinkRefused,
    NotFoundError,
    RateLimitedError,
    Redirected,
    ResultsNotReady,
    ServiceError,
    TimedOut,
)
from batch_mcp.backends.digitalocean import DigitalOceanBackend
from batch_mcp.backends.http import HttpOptions
from batch_mcp.backends.registry import Registry
from batch_mcp.backends.retries import RetryPolicy
from batch_mcp.domain import CreateSpec, Job, JobStatus, ResultSource
from batch_mcp.sandbox import SandboxServer
from batch_mcp.schemas.lines import ResultRecord

from conftest import fast_config

FAST = HttpOptions(retry=RetryPolicy(max_attempts=4, base_delay_s=0.01, max_delay_s=0.05, max_wait_s=5),
                   timeout_s=30.0)
CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module", params=["openapi", "godo"])
def dialect_sandbox(request: pytest.FixtureRequest) -> Iterator[SandboxServer]:
    with SandboxServer(fast_config(dialect=request.param, failure_rate=0.1)) as server:
        yield server


@pytest.fixture
async def backend(dialect_sandbox: SandboxServer) -> AsyncIterator[DigitalOceanBackend]:
    dialect_sandbox.sandbox.faults.reset()
    opened = DigitalOceanBackend(api_key=dialect_sandbox.token, base_url=dialect_sandbox.base_url, options=FAST)
    yield opened
    await opened.aclose()
    dialect_sandbox.sandbox.faults.reset()


def request_file(tmp_path: Path, lines: int = 50, line_format: str = "openai") -> Path:
    path = tmp_path / f"requests-{line_format}.jsonl"
    with path.open("w") as out:
        for i in range(lines):
            if line_format == "openai":
                line = {"custom_id": f"r-{i}", "method": "POST", "url": CHAT,
                        "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"Say {i}"}]}}
            else:
                line = {"custom_id": f"r-{i}", "params": {"model": "claude-3-5-haiku-latest", "max_tokens": 16,
                                                          "messages": [{"role": "user", "content": f"Say {i}"}]}}
            out.write(json.dumps(line) + "\n")
    return path


def planned(input_ref: str, line_format: str = "openai", **overrides: Any) -> CreateSpec:
    values: dict[str, Any] = dict(input_ref=input_ref, line_format=line_format,
                                  endpoint=CHAT if line_format == "openai" else None,
                                  client_token=f"tok_{uuid.uuid4().hex}", planned_at=datetime.now(UTC))
    values.update(overrides)
    return CreateSpec(**values)


async def finish(backend: DigitalOceanBackend, job_id: str) -> Job:
    for _ in range(400):
        job = await backend.get(job_id)
        if job.is_terminal:
            return job
        await anyio.sleep(0.02)
    raise AssertionError(f"{job_id} did not finish")


def creates(server: SandboxServer) -> int:
    return sum(record.operation == "create_batch" for record in server.sandbox.requests)


# --- every operation, both dialects ---------------------------------------------------------------


@pytest.mark.parametrize("line_format", ["openai", "anthropic"])
async def test_upload_create_poll_results_download(dialect_sandbox: SandboxServer, backend: DigitalOceanBackend,
                                                   tmp_path: Path, line_format: str) -> None:
    sent: list[int] = []

    async def on_progress(done: int, total: int) -> None:
        sent.append(done)

    path = request_file(tmp_path, 60, line_format)
    staged = await backend.upload(path, line_format, on_progress)
    assert (staged.backend, staged.bytes, staged.filename) == ("digitalocean", path.stat().st_size, path.name)
    assert sent[-1] == path.stat().st_size and staged.expires_at is not None
    spec = planned(staged.ref, line_format, metadata={"team": "support"})
    job = await backend.create(spec)
    assert (job.input_ref, job.line_format, job.client_token) == (staged.ref, line_format, spec.client_token)
    assert job.status in (JobStatus.VALIDATING, JobStatus.QUEUED) and job.raw_status == job.status.value
    with pytest.raises(ResultsNotReady):
        await backend.results(job.id)
    done = await finish(backend, job.id)
    assert done.status is JobStatus.COMPLETED and done.results_ready and done.ended_at is not None
    assert done.counts is not None and done.counts.total == 60
    assert done.counts.succeeded + done.counts.failed == 60 and done.counts.processing == 0
    sources = await backend.results(job.id)
    assert sources[0].kind == "output" and all(s.shareable_url and s.expires_at for s in sources)
    records: dict[str, ResultRecord] = {}
    for source in sources:
        target = tmp_path / f"{source.kind}.jsonl"
        with target.open("wb") as out:
            written = await backend.download(source, out)
        assert written == target.stat().st_size
        for line in target.read_text().splitlines():
            record = ResultRecord.from_line(json.loads(line))
            if record.succeeded or record.custom_id not in records:
                records[record.custom_id] = record
    assert sum(r.succeeded for r in records.values()) == done.counts.succeeded and len(records) == 60


async def test_list_pages_through_every_job_newest_first(dialect_sandbox: SandboxServer,
                                                          backend: DigitalOceanBackend, tmp_path: Path) -> None:
    ref = (await backend.upload(request_file(tmp_path, 3), "openai")).ref
    made = [(await backend.create(planned(ref))).id for _ in range(5)]
    first = await backend.list(limit=2)
    assert len(first.jobs) == 2 and first.has_more and first.jobs[0].id == made[-1]
    seen, cursor = [], None
    for _ in range(100):
        page = await backend.list(limit=2, cursor=cursor)
        seen += [job.id for job in page.jobs]
        if not page.has_more:
            break
        cursor = page.next_cursor
    assert set(made) <= set(seen) and len(seen) == len(set(seen)) == len(dialect_sandbox.sandbox.jobs)
    assert seen.index(made[-1]) < seen.index(made[0])
    for status in (JobStatus.VALIDATING, JobStatus.QUEUED):  # queued is not in the spec's filter: ours
        page = await backend.list(status=status, limit=100)
        assert all(job.status is status for job in page.jobs)


async def test_a_repeated_create_is_the_same_job_and_recover_replays_it(dialect_sandbox: SandboxServer,
                                                                        backend: DigitalOceanBackend,
                                                                        tmp_path: Path) -> None:
    spec = planned((await backend.upload(request_file(tmp_path, 3), "openai")).ref)
    before = len(dialect_sandbox.sandbox.jobs)
    first = await backend.create(spec)
    again = await backend.create(spec)
    recovered = await backend.recover(spec)
    assert first.id == again.id == recovered.id and len(dialect_sandbox.sandbox.jobs) == before + 1
    with pytest.raises(ConflictError) as conflict:
        await backend.create(spec.model_copy(update={"metadata": {"other": "body"}}))
    assert conflict.value.status_code == 409 and conflict.value.request_id


async def test_cancel(dialect_sandbox: SandboxServer, backend: DigitalOceanBackend, tmp_path: Path) -> None:
    ref = (await backend.upload(request_file(tmp_path, 400), "openai")).ref
    clock = dialect_sandbox.sandbox.clock
    clock.freeze()  # only advance() moves it: on a loaded machine the job once finished before the cancel
    try:
        job = await backend.create(planned(ref))
        for _ in range(400):  # DigitalOcean refuses to cancel before the job reached its provider
            if (await backend.get(job.id)).status is not JobStatus.VALIDATING:
                break
            clock.advance(0.02)
        cancelling = await backend.cancel(job.id)
    finally:
        clock.thaw()
    assert cancelling.status in (JobStatus.CANCELLING, JobStatus.CANCELLED)
    assert cancelling.cancel_requested_at is not None or cancelling.status is JobStatus.CANCELLING
    assert (await finish(backend, job.id)).status is JobStatus.CANCELLED
    assert [source.kind for source in await backend.results(job.id)][:1] == ["output"]
    with pytest.raises(ConflictError):
        await backend.cancel(job.id)


async def test_token_goes_only_to_the_api(dialect_sandbox: SandboxServer, backend: DigitalOceanBackend,
                                          tmp_path: Path) -> None:
    log = dialect_sandbox.sandbox.requests
    start = len(log)
    job = await backend.create(planned((await backend.upload(request_file(tmp_path, 5), "openai")).ref))
    await finish(backend, job.id)
    await backend.download((await backend.results(job.id))[0], io.BytesIO())
    seen = log[start:]
    storage = [r for r in seen if r.operation in ("upload", "download")]
    api = [r for r in seen if r.operation not in ("upload", "download")]
    assert {r.operation for r in storage} == {"upload", "download"}
    assert not any(r.authorization for r in storage)
    assert api and all(r.authorization for r in api)
    assert all("?" not in r.path for r in seen)


async def test_refusals_are_typed(dialect_sandbox: SandboxServer, backend: DigitalOceanBackend,
                                  tmp_path: Path) -> None:
    stranger = DigitalOceanBackend(api_key="wrong-token", base_url=dialect_sandbox.base_url, options=FAST)
    try:
        with pytest.raises(AuthenticationError) as denied:
            await stranger.get("x")
        assert denied.value.status_code == 401 and "wrong-token" not in str(denied.value)
    finally:
        await stranger.aclose()
    with pytest.raises(NotFoundError) as missing:
        await backend.get(str(uuid.uuid4()))
    assert missing.value.code == "not_found" and missing.value.request_id  # DO's {id, message, request_id}
    with pytest.raises(NotFoundError):
        await backend.get("../../v1/batches")  # one path segment, never another route
    notes = tmp_path / "notes.txt"
    notes.write_text("x\n")
    with pytest.raises(InvalidRequestError):  # DigitalOcean names input files *.jsonl
        await backend.upload(notes, "openai")
    with pytest.raises(NotFoundError):
        await backend.create(planned(str(uuid.uuid4())))
    with pytest.raises(InvalidRequestError, match="completion window"):
        await backend.create(planned("file", completion_window="48h"))  # refused before sending
    with pytest.raises(InvalidRequestError, match="anthropic"):
        await backend.upload(request_file(tmp_path, 1), "gemini")


async def test_a_create_before_the_upload_is_refused_with_the_reason(dialect_sandbox: SandboxServer,
                                                                     backend: DigitalOceanBackend) -> None:
    async with httpx2.AsyncClient() as raw:  # an intent whose bytes never arrived
        intent = (await raw.post(dialect_sandbox.base_url + "/v1/batches/files", json={"file_name": "late.jsonl"},
                                 headers={"Authorization": f"Bearer {dialect_sandbox.token}"})).json()
    with pytest.raises(InvalidRequestError, match="upload"):
        await backend.create(planned(intent["file_id"]))


# --- faults ----------------------------------------------------------------------------------------

OPERATIONS = ("create_file", "upload", "create_batch", "get_batch", "list_batches", "get_results", "download")


@pytest.mark.parametrize("kind", ["server_error", "rate_limit", "drop"])
async def test_transient_faults_are_survived_without_duplicates(dialect_sandbox: SandboxServer,
                                                                backend: DigitalOceanBackend, tmp_path: Path,
                                                                kind: str) -> None:
    faults = dialect_sandbox.sandbox.faults
    for operation in OPERATIONS:
        faults.fail_next(operation, kind, times=2, retry_after_s=0)  # type: ignore[arg-type]
    before = len(dialect_sandbox.sandbox.jobs)
    path = request_file(tmp_path, 20)
    staged = await backend.upload(path, "openai")
    job = await backend.create(planned(staged.ref))
    assert len(dialect_sandbox.sandbox.jobs) == before + 1
    await backend.list(limit=5)
    assert (await finish(backend, job.id)).status is JobStatus.COMPLETED
    output = (await backend.results(job.id))[0]
    with (tmp_path / "out.jsonl").open("wb") as out:  # each retry starts the file again
        size = await backend.download(output, out)
    assert size == (tmp_path / "out.jsonl").stat().st_size > 0
    assert dialect_sandbox.sandbox.files[staged.ref].path.read_bytes() == path.read_bytes()
    assert all(faults.take(operation) is None for operation in OPERATIONS)  # every fault fired


@pytest.mark.parametrize(("kind", "error"), [("server_error", ServiceError), ("rate_limit", RateLimitedError),
                                             ("drop", ConnectionFailed)])
async def test_exhausted_retries_surface_as_typed_errors(dialect_sandbox: SandboxServer,
                                                         backend: DigitalOceanBackend, kind: str,
                                                         error: type[Exception]) -> None:
    dialect_sandbox.sandbox.faults.fail_next("get_batch", kind, times=10, retry_after_s=0)  # type: ignore[arg-type]
    with pytest.raises(error) as raised:
        await backend.get(str(uuid.uuid4()))
    assert raised.value.hint and "Bearer" not in str(raised.value)  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind", ["server_error", "drop", "lost_answer"])
async def test_a_create_that_never_answers_is_recovered_as_one_job(dialect_sandbox: SandboxServer,
                                                                   backend: DigitalOceanBackend, tmp_path: Path,
                                                                   kind: str) -> None:
    spec = planned((await backend.upload(request_file(tmp_path, 3), "openai")).ref)
    dialect_sandbox.sandbox.faults.fail_next("create_batch", kind, times=10)  # type: ignore[arg-type]
    before = creates(dialect_sandbox)
    with pytest.raises(CreateNotConfirmed) as caught:
        await backend.create(spec)
    assert caught.value.client_token == spec.client_token
    assert creates(dialect_sandbox) - before == FAST.retry.max_attempts  # safe to repeat: request_id
    dialect_sandbox.sandbox.faults.reset()
    job = await backend.recover(spec)
    assert [j.batch_id for j in dialect_sandbox.sandbox.jobs.values()
            if j.request.request_id == spec.client_token] == [job.id]


async def test_long_retry_after_is_returned_not_waited(dialect_sandbox: SandboxServer,
                                                       backend: DigitalOceanBackend) -> None:
    dialect_sandbox.sandbox.faults.fail_next("list_batches", "rate_limit", times=1, retry_after_s=3600)
    with pytest.raises(RateLimitedError) as limited:
        await backend.list()
    assert limited.value.retry_after_s == pytest.approx(3600, abs=1)
    assert "Retry after 3600 s" in str(limited.value)


async def test_a_refused_upload_link_gets_one_new_intent(dialect_sandbox: SandboxServer,
                                                         backend: DigitalOceanBackend, tmp_path: Path) -> None:
    faults = dialect_sandbox.sandbox.faults
    path = request_file(tmp_path, 5)
    faults.upload_url_ttl_s = 1e-6  # every intent expires before its upload starts
    intents = dialect_sandbox.sandbox.stats()["files"]
    with pytest.raises(LinkRefused, match="two fresh upload links") as refused:
        await backend.upload(path, "openai")
    assert refused.value.status_code == 403 and dialect_sandbox.sandbox.stats()["files"] == intents + 2
    faults.upload_url_ttl_s = None
    uploads = sum(r.operation == "upload" for r in dialect_sandbox.sandbox.requests)
    faults.fail_next("upload", "server_error")  # a 5xx retries the same link, with no new intent
    staged = await backend.upload(path, "openai")
    assert dialect_sandbox.sandbox.files[staged.ref].size == path.stat().st_size
    assert sum(r.operation == "upload" for r in dialect_sandbox.sandbox.requests) == uploads + 2


async def test_a_refused_upload_link_is_renewed_once(dialect_sandbox: SandboxServer, backend: DigitalOceanBackend,
                                                     tmp_path: Path) -> None:
    path = request_file(tmp_path, 5)
    real = backend._http.put_file
    calls: list[str] = []

    async def expire_first(operation: str, url: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(url)
        if len(calls) == 1:
            dialect_sandbox.sandbox.expire_upload_urls()
        return await real(operation, url, *args, **kwargs)

    backend._http.put_file = expire_first  # type: ignore[method-assign]
    staged = await backend.upload(path, "openai")
    assert len(calls) == 2 and calls[0] != calls[1]
    assert dialect_sandbox.sandbox.files[staged.ref].size == path.stat().st_size


@pytest.mark.parametrize("operation", ["upload", "download"])
async def test_a_storage_redirect_is_explained_not_followed(dialect_sandbox: SandboxServer,
                                                            backend: DigitalOceanBackend, tmp_path: Path,
                                                            operation: str) -> None:
    path = request_file(tmp_path, 3)
    if operation == "download":
        job = await backend.create(planned((await backend.upload(path, "openai")).ref))
        await finish(backend, job.id)
        source = (await backend.results(job.id))[0]
    dialect_sandbox.sandbox.faults.fail_next(operation, "redirect")  # type: ignore[arg-type]
    out = io.BytesIO()
    with pytest.raises(Redirected, match="redirect to storage.eu-west-1.sandbox.invalid") as caught:
        if operation == "upload":
            await backend.upload(path, "openai")
        else:
            await backend.download(source, out)
    assert caught.value.status_code == 307 and "Nothing was transferred" in caught.value.hint
    assert "signature" not in str(caught.value).lower() and out.getvalue() == b""


async def test_a_refused_result_link_is_refreshed_once(dialect_sandbox: SandboxServer,
                                                       backend: DigitalOceanBackend, tmp_path: Path) -> None:
    job = await backend.create(planned((await backend.upload(request_file(tmp_path, 5), "openai")).ref))
    await finish(backend, job.id)
    fresh = (await backend.results(job.id))[0]
    assert fresh.shareable_url is not None
    stale = fresh.model_copy(update={"shareable_url": fresh.shareable_url.replace("signature=", "signature=0")})
    before = sum(r.operation == "get_results" for r in dialect_sandbox.sandbox.requests)
    out = io.BytesIO()
    assert await backend.download(stale, out) == len(out.getvalue()) > 0
    assert sum(r.operation == "get_results" for r in dialect_sandbox.sandbox.requests) == before + 1
    linkless = ResultSource(kind="output", locator=job.id)  # no link at all: one is fetched
    assert await backend.download(linkless, io.BytesIO()) == len(out.getvalue())
    real = backend.results

    async def always_stale(job_id: str) -> list[ResultSource]:
        return [stale for _ in await real(job_id)][:1]

    backend.results = always_stale  # type: ignore[method-assign]
    with pytest.raises(LinkRefused, match="freshly signed") as refused:
        await backend.download(stale, io.BytesIO())
    assert refused.value.status_code == 403


async def test_storage_errors_on_download_are_typed(dialect_sandbox: SandboxServer, backend: DigitalOceanBackend,
                                                    tmp_path: Path) -> None:
    job = await backend.create(planned((await backend.upload(request_file(tmp_path, 3), "openai")).ref))
    await finish(backend, job.id)
    output = (await backend.results(job.id))[0]
    dialect_sandbox.sandbox.faults.fail_next("download", "server_error", times=10)
    sink = io.BytesIO()
    with pytest.raises(ServiceError) as failed:
        await backend.download(output, sink)
    assert failed.value.status_code == 500 and sink.getvalue() == b""


async def test_a_failed_job_has_no_results_and_a_412_is_not_ready(dialect_sandbox: SandboxServer,
                                                                  backend: DigitalOceanBackend,
                                                                  tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {}}\nnot json\n')
    job = await backend.create(planned((await backend.upload(path, "openai")).ref))
    with pytest.raises(ResultsNotReady) as not_ready:
        await backend.results(job.id)
    assert not_ready.value.status_code == 412
    ended = await finish(backend, job.id)
    assert ended.status is JobStatus.FAILED and not ended.results_ready
    assert await backend.results(job.id) == []


async def test_slow_responses_time_out_then_explain(dialect_sandbox: SandboxServer) -> None:
    dialect_sandbox.sandbox.faults.slow("get_batch", 1.0)
    options = HttpOptions(retry=RetryPolicy(max_attempts=2, base_delay_s=0.01), timeout_s=0.2)
    slow = DigitalOceanBackend(api_key=dialect_sandbox.token, base_url=dialect_sandbox.base_url, options=options)
    try:
        with pytest.raises(TimedOut, match="2 attempts"):
            await slow.get(str(uuid.uuid4()))
    finally:
        await slow.aclose()
        dialect_sandbox.sandbox.faults.reset()


async def test_the_registry_opens_it_from_digitaloceans_variables(dialect_sandbox: SandboxServer,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MODEL_ACCESS_KEY", "OPENAI_API_KEY", "DEEPINFRA_TOKEN", "DEEPINFRA_API_KEY", "GROQ_API_KEY",
                 "BATCH_MCP_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DIGITALOCEAN_TOKEN", dialect_sandbox.token)  # the second of its two names
    monkeypatch.setenv("BATCH_MCP_BASE_URL", dialect_sandbox.base_url)
    registry = Registry.open(FAST)
    try:
        assert registry.names == ("digitalocean",) and registry.default == "digitalocean"
        backend, native = registry.resolve("digitalocean:" + str(uuid.uuid4()))
        assert isinstance(backend, DigitalOceanBackend)
        with pytest.raises(NotFoundError):
            await backend.get(native)
    finally:
        await registry.aclose()
    monkeypatch.setenv("BATCH_MCP_BASE_URL", "http://inference.example")
    with pytest.raises(ValueError, match="BATCH_MCP_BASE_URL.*unencrypted"):
        Registry.open(FAST)
