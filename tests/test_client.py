"""The API client against the sandbox over real loopback HTTP: both dialects, every operation, every fault."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from batch_mcp.client import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    DigitalOceanBatchClient,
    NotFoundError,
    RateLimitedError,
    ResultsNotReadyError,
    RetryPolicy,
    ServerError,
    UploadURLExpiredError,
)
from batch_mcp.sandbox import SandboxServer
from batch_mcp.schemas import CreateBatchRequest, ResultRecord

from conftest import fast_config

FAST_RETRY = RetryPolicy(max_attempts=4, base_delay_s=0.01, max_delay_s=0.05, max_wait_s=5)


@pytest.fixture(scope="module", params=["openapi", "godo"])
def dialect_sandbox(request: pytest.FixtureRequest) -> Iterator[SandboxServer]:
    with SandboxServer(fast_config(dialect=request.param, failure_rate=0.1)) as server:
        yield server


@pytest.fixture(autouse=True)
def _clean_faults(dialect_sandbox: SandboxServer) -> Iterator[None]:
    dialect_sandbox.sandbox.faults.reset()
    yield
    dialect_sandbox.sandbox.faults.reset()


def client_for(sandbox: SandboxServer, **kwargs) -> DigitalOceanBatchClient:
    return DigitalOceanBatchClient(token=sandbox.token, base_url=sandbox.base_url,
                                   retry=kwargs.pop("retry", FAST_RETRY), **kwargs)


def request_file(tmp_path: Path, lines: int = 50, provider: str = "openai") -> Path:
    path = tmp_path / f"requests-{provider}.jsonl"
    with path.open("w") as out:
        for i in range(lines):
            if provider == "openai":
                line = {"custom_id": f"r-{i}", "method": "POST", "url": "/v1/chat/completions",
                        "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"Say {i}"}]}}
            else:
                line = {"custom_id": f"r-{i}", "params": {"model": "claude-3-5-haiku-latest", "max_tokens": 16,
                                                          "messages": [{"role": "user", "content": f"Say {i}"}]}}
            out.write(json.dumps(line) + "\n")
    return path


def create_request(file_id: str, provider: str = "openai") -> CreateBatchRequest:
    return CreateBatchRequest(file_id=file_id, provider=provider, request_id=str(uuid.uuid4()),
                              endpoint="/v1/chat/completions" if provider == "openai" else None)


async def finish(client: DigitalOceanBatchClient, batch_id: str) -> str:
    import anyio

    for _ in range(400):
        batch = await client.get_batch(batch_id)
        if batch.is_terminal:
            return batch.status
        await anyio.sleep(0.02)
    raise AssertionError("batch did not finish")


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_upload_create_poll_results_download(dialect_sandbox: SandboxServer, tmp_path: Path,
                                                   provider: str) -> None:
    async with client_for(dialect_sandbox) as client:
        sent: list[int] = []

        async def on_progress(done: int, total: int) -> None:
            sent.append(done)

        path = request_file(tmp_path, 60, provider)
        intent = await client.upload_file(path, on_progress=on_progress)
        assert intent.file_id and sent[-1] == path.stat().st_size
        batch = await client.create_batch(create_request(intent.file_id, provider))
        assert batch.input_file_id == intent.file_id and batch.provider == provider
        assert batch.status in ("validating", "queued")
        with pytest.raises(ResultsNotReadyError):
            await client.get_results(batch.batch_id)
        assert await finish(client, batch.batch_id) == "completed"
        done = await client.get_batch(batch.batch_id)
        assert done.request_counts.total == 60
        assert done.request_counts.completed + done.request_counts.failed == 60
        links = await client.get_results(batch.batch_id)
        assert links.result_available and links.output_file_url
        records: dict[str, ResultRecord] = {}
        for name, url in (("out", links.output_file_url), ("err", links.error_file_url)):
            if url:
                target = tmp_path / f"{name}.jsonl"
                with target.open("wb") as out:
                    await client.download(url, out)
                for line in target.read_text().splitlines():
                    record = ResultRecord.from_line(json.loads(line))
                    if record.succeeded or record.custom_id not in records:
                        records[record.custom_id] = record
        assert sum(r.succeeded for r in records.values()) == done.request_counts.completed
        assert all(r.text for r in records.values() if r.succeeded)


async def test_list_pages_through_every_job(dialect_sandbox: SandboxServer, tmp_path: Path) -> None:
    async with client_for(dialect_sandbox) as client:
        intent = await client.upload_file(request_file(tmp_path, 3))
        created = [(await client.create_batch(create_request(intent.file_id))).batch_id for _ in range(5)]
        first_page = await client.list_batches(limit=2)
        assert len(first_page.data) == 2 and first_page.has_more and first_page.next_cursor
        assert first_page.data[0].batch_id == created[-1]  # newest first
        listed = [b.batch_id async for b in client.iter_batches(page_size=2)]
        assert set(created) <= set(listed) and len(listed) == len(set(listed))
        assert listed.index(created[-1]) < listed.index(created[0])
        validating = [b async for b in client.iter_batches(status="validating", page_size=100)]
        assert all(b.status == "validating" for b in validating)


async def test_idempotent_create_and_conflicting_reuse(dialect_sandbox: SandboxServer, tmp_path: Path) -> None:
    async with client_for(dialect_sandbox) as client:
        intent = await client.upload_file(request_file(tmp_path, 3))
        request = create_request(intent.file_id)
        before = dialect_sandbox.sandbox.stats()["jobs"]
        first = await client.create_batch(request)
        second = await client.create_batch(request)
        assert first.batch_id == second.batch_id
        assert dialect_sandbox.sandbox.stats()["jobs"] == before + 1
        with pytest.raises(ConflictError) as conflict:
            await client.create_batch(request.model_copy(update={"metadata": {"other": "body"}}))
        assert conflict.value.status_code == 409 and conflict.value.request_id


async def test_token_goes_only_to_the_api(dialect_sandbox: SandboxServer, tmp_path: Path) -> None:
    log = dialect_sandbox.sandbox.requests
    async with client_for(dialect_sandbox) as client:
        start = len(log)
        intent = await client.upload_file(request_file(tmp_path, 5))
        batch = await client.create_batch(create_request(intent.file_id))
        await finish(client, batch.batch_id)
        links = await client.get_results(batch.batch_id)
        await client.download(links.output_file_url, io.BytesIO())
    seen = log[start:]
    storage = [r for r in seen if r.operation in ("upload", "download")]
    api = [r for r in seen if r.operation not in ("upload", "download")]
    assert {r.operation for r in storage} == {"upload", "download"}
    assert not any(r.authorization for r in storage)
    assert api and all(r.authorization for r in api)
    assert all("?" not in r.path for r in seen)


async def test_typed_errors(dialect_sandbox: SandboxServer, tmp_path: Path) -> None:
    async with DigitalOceanBatchClient(token="wrong-token", base_url=dialect_sandbox.base_url,
                                       retry=FAST_RETRY) as stranger:
        with pytest.raises(AuthenticationError) as denied:
            await stranger.get_batch("x")
        assert denied.value.status_code == 401 and "wrong-token" not in str(denied.value)
    async with client_for(dialect_sandbox) as client:
        with pytest.raises(NotFoundError):
            await client.get_batch(str(uuid.uuid4()))
        with pytest.raises(NotFoundError):
            await client.get_batch("../../v1/batches")  # one path segment, never another route
        with pytest.raises(BadRequestError):
            await client.create_file_intent("notes.txt")
        with pytest.raises((BadRequestError, NotFoundError)):
            await client.create_batch(create_request(str(uuid.uuid4())))
        never_uploaded = await client.create_file_intent("late.jsonl")
        with pytest.raises(BadRequestError) as head_check:
            await client.create_batch(create_request(never_uploaded.file_id))
        assert "upload" in head_check.value.message.lower()
        intent = await client.upload_file(request_file(tmp_path, 3))
        batch = await client.create_batch(create_request(intent.file_id))
        await finish(client, batch.batch_id)
        with pytest.raises(ConflictError):
            await client.cancel_batch(batch.batch_id)
        assert client.rate_limit is not None and client.rate_limit.limit


@pytest.mark.parametrize("kind", ["server_error", "rate_limit", "drop"])
async def test_transient_faults_are_survived_without_duplicates(dialect_sandbox: SandboxServer, tmp_path: Path,
                                                                kind: str) -> None:
    faults = dialect_sandbox.sandbox.faults
    async with client_for(dialect_sandbox) as client:
        for operation in ("create_file", "upload", "create_batch", "get_batch", "list_batches", "get_results",
                          "download"):
            faults.fail_next(operation, kind, times=2, retry_after_s=0)
        before = dialect_sandbox.sandbox.stats()["jobs"]
        path = request_file(tmp_path, 20)
        intent = await client.upload_file(path)
        batch = await client.create_batch(create_request(intent.file_id))
        assert dialect_sandbox.sandbox.stats()["jobs"] == before + 1
        await client.list_batches(limit=5)
        assert await finish(client, batch.batch_id) == "completed"
        links = await client.get_results(batch.batch_id)
        with (tmp_path / "out.jsonl").open("wb") as out:  # each retry starts the file again
            size = await client.download(links.output_file_url, out)
        assert size == (tmp_path / "out.jsonl").stat().st_size > 0
        stored = dialect_sandbox.sandbox.files[intent.file_id].path
        assert stored.read_bytes() == path.read_bytes()


@pytest.mark.parametrize(("kind", "error"), [("server_error", ServerError), ("rate_limit", RateLimitedError),
                                             ("drop", APIConnectionError)])
async def test_exhausted_retries_surface_as_typed_errors(dialect_sandbox: SandboxServer, kind: str,
                                                         error: type[Exception]) -> None:
    dialect_sandbox.sandbox.faults.fail_next("get_batch", kind, times=10, retry_after_s=0)
    async with client_for(dialect_sandbox) as client:
        with pytest.raises(error) as raised:
            await client.get_batch(str(uuid.uuid4()))
    assert raised.value.hint and "Bearer" not in str(raised.value)


async def test_long_retry_after_is_returned_not_waited(dialect_sandbox: SandboxServer) -> None:
    dialect_sandbox.sandbox.faults.fail_next("list_batches", "rate_limit", times=1, retry_after_s=3600)
    async with client_for(dialect_sandbox) as client:
        with pytest.raises(RateLimitedError) as limited:
            await client.list_batches()
    assert limited.value.retry_after_s == pytest.approx(3600, abs=1)
    assert "Retry after 3600 s" in str(limited.value)


async def test_expired_upload_url_gets_a_new_intent(dialect_sandbox: SandboxServer, tmp_path: Path) -> None:
    faults = dialect_sandbox.sandbox.faults
    path = request_file(tmp_path, 5)
    async with client_for(dialect_sandbox) as client:
        stale = await client.create_file_intent(path.name)
        dialect_sandbox.sandbox.expire_upload_urls()
        with pytest.raises(UploadURLExpiredError):
            await client.upload_to_url(stale.upload_url, path)
        tampered = stale.upload_url.replace("signature=", "signature=0")
        with pytest.raises(UploadURLExpiredError):
            await client.upload_to_url(tampered, path)
        faults.upload_url_ttl_s = 1e-6  # the next intent expires before its upload starts
        intent_count = dialect_sandbox.sandbox.stats()["files"]
        with pytest.raises(UploadURLExpiredError):
            await client.upload_file(path, max_intents=2)
        assert dialect_sandbox.sandbox.stats()["files"] == intent_count + 2
        faults.upload_url_ttl_s = None
        intent = await client.upload_file(path)
        assert dialect_sandbox.sandbox.files[intent.file_id].size == path.stat().st_size


async def test_slow_responses_time_out_then_explain(dialect_sandbox: SandboxServer) -> None:
    dialect_sandbox.sandbox.faults.slow("get_batch", 1.0)
    timeout = httpx2.Timeout(connect=2.0, read=0.2, write=2.0, pool=2.0)
    async with client_for(dialect_sandbox, retry=RetryPolicy(max_attempts=2, base_delay_s=0.01),
                          timeout=timeout) as client:
        with pytest.raises(APITimeoutError) as timed_out:
            await client.get_batch(str(uuid.uuid4()))
    assert "2 attempts" in str(timed_out.value)


async def test_storage_errors_on_download_are_typed(dialect_sandbox: SandboxServer, tmp_path: Path) -> None:
    async with client_for(dialect_sandbox) as client:
        intent = await client.upload_file(request_file(tmp_path, 3))
        batch = await client.create_batch(create_request(intent.file_id))
        await finish(client, batch.batch_id)
        links = await client.get_results(batch.batch_id)
        dialect_sandbox.sandbox.faults.fail_next("download", "server_error", times=10)
        sink = io.BytesIO()
        with pytest.raises(ServerError) as failed:
            await client.download(links.output_file_url, sink)
    assert failed.value.status_code == 500 and sink.getvalue() == b""
