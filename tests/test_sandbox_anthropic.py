"""The Anthropic Message Batches emulator driven by the official ``anthropic`` SDK in strict mode.

Strict mode validates every JSON answer against the SDK's models. The SDK never validates result lines,
so each one is checked with ``MessageBatchIndividualResponse.model_validate_json`` and each succeeded
message as a ``Message``. The SDK 2.x sends ``Authorization: Bearer`` and ``anthropic-version:
2026-10-21``; the documented ``x-api-key`` with ``2023-06-01`` (what our backend sends) is checked over
raw HTTP. Each sandbox runs on a frozen clock that the tests advance, so timings are exact.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pytest
from anthropic.types import Message
from anthropic.types.messages import MessageBatch, MessageBatchIndividualResponse

from batch_mcp.domain import parse_timestamp
from batch_mcp.sandbox import SandboxConfig, SandboxServer

FAIL = " [[fail]]"


def config(**overrides: Any) -> SandboxConfig:
    """One second queued, 10 requests per second, one second finalizing: 20 requests end 4 s after creation."""
    values: dict[str, Any] = dict(backend="anthropic", queued_s=1, requests_per_s=10, finalizing_s=1, cancelling_s=1,
                                  failure_rate=0.3, rate_limit_per_minute=1_000_000)
    values.update(overrides)
    return SandboxConfig(**values)


@pytest.fixture(scope="module")
def emulator() -> Iterator[SandboxServer]:
    with SandboxServer(config()) as server:
        server.sandbox.clock.freeze()
        yield server


@pytest.fixture(autouse=True)
def _no_faults(emulator: SandboxServer) -> None:
    emulator.sandbox.faults.reset()


def sdk(server: SandboxServer, *, strict: bool = True, **options: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=options.pop("api_key", server.token), base_url=server.base_url,
                               _strict_response_validation=strict, **{"max_retries": 0, **options})


def request(custom_id: str, text: str = "Summarise the ticket", **params: Any) -> dict[str, Any]:
    return {"custom_id": custom_id,
            "params": {"model": "claude-haiku-4-5", "max_tokens": 64, "messages": [{"role": "user", "content": text}],
                       **params}}


REQUESTS = [request(f"r{i}", f"Summarise ticket {i}" + (FAIL if i == 3 else "")) for i in range(20)]


def poll(server: SandboxServer, batch_id: str, client: anthropic.Anthropic | None = None) -> list[MessageBatch]:
    """Retrieve until ended, moving the frozen clock half a second between polls."""
    client = client or sdk(server)
    seen = [client.messages.batches.retrieve(batch_id)]
    while seen[-1].processing_status != "ended":
        assert len(seen) < 200, f"batch stuck in {seen[-1].processing_status}"
        server.sandbox.clock.advance(0.5)
        seen.append(client.messages.batches.retrieve(batch_id))
    return seen


def result_lines(server: SandboxServer, batch_id: str) -> list[MessageBatchIndividualResponse]:
    """The results stream fetched by the SDK from ``results_url``, each line validated strictly."""
    client = sdk(server)  # held: a collected client closes its pool, and the streamed body with it
    raw = client.messages.batches.with_raw_response.results(batch_id).http_response.read()
    lines = [MessageBatchIndividualResponse.model_validate_json(line) for line in raw.splitlines()]
    assert all(isinstance(line.result.message, Message) for line in lines if line.result.type == "succeeded")
    return lines


def by_type(lines: list[MessageBatchIndividualResponse]) -> dict[str, int]:
    counted: dict[str, int] = {}
    for line in lines:
        counted[line.result.type] = counted.get(line.result.type, 0) + 1
    return counted


def test_round_trip(emulator: SandboxServer) -> None:
    """create → retrieve → poll → results: every answer validates strictly, every line is an individual response."""
    client = sdk(emulator)
    batch = client.messages.batches.create(requests=REQUESTS)
    assert batch.id.startswith("msgbatch_") and batch.processing_status == "in_progress"
    assert batch.request_counts.processing == 20 and batch.results_url is None
    assert (batch.expires_at - batch.created_at).total_seconds() == pytest.approx(86400, abs=0.01)

    history = poll(emulator, batch.id)
    assert all(b.request_counts.processing == 20 and b.request_counts.succeeded == 0 for b in history[:-1])
    done = history[-1]
    counts = done.request_counts
    assert counts.processing == counts.canceled == counts.expired == 0
    assert counts.succeeded + counts.errored == 20 and counts.errored >= 1
    assert done.ended_at is not None and done.cancel_initiated_at is None and done.archived_at is None
    assert done.results_url == f"{emulator.origin}/v1/messages/batches/{batch.id}/results"  # absolute, here

    lines = result_lines(emulator, batch.id)
    assert sorted(line.custom_id for line in lines) == sorted(r["custom_id"] for r in REQUESTS)
    assert by_type(lines) == {"succeeded": counts.succeeded, "errored": counts.errored}
    failed = next(line for line in lines if line.custom_id == "r3")  # the [[fail]] marker always fails
    assert failed.result.type == "errored" and failed.result.error.type == "error"
    succeeded = next(line for line in lines if line.result.type == "succeeded")
    assert succeeded.result.message.content[0].text.startswith("Summary:")
    assert succeeded.result.message.usage.input_tokens >= 1
    sdk_lines = list(client.messages.batches.results(batch.id))  # the SDK's own decoder agrees
    assert [line.custom_id for line in sdk_lines] == [line.custom_id for line in lines]
    fetches = [r for r in emulator.sandbox.requests if r.operation == "download"]
    assert fetches and all(r.authorization and r.host == emulator.origin.removeprefix("http://") for r in fetches)


def test_a_lenient_client_sees_the_same_batch(emulator: SandboxServer) -> None:
    """Nothing depends on fields a default (non-strict) client would skip."""
    lenient = sdk(emulator, strict=False)
    batch = lenient.messages.batches.create(requests=REQUESTS[:2])
    done = poll(emulator, batch.id, lenient)[-1]
    assert done.request_counts.succeeded + done.request_counts.errored == 2
    assert {line.custom_id for line in lenient.messages.batches.results(batch.id)} == {"r0", "r1"}


def test_the_documented_headers_work_too(emulator: SandboxServer) -> None:
    """``x-api-key`` + ``2023-06-01`` (the docs, our backend); a missing or unknown version is refused."""
    url = f"{emulator.base_url}/v1/messages/batches"
    documented = {"x-api-key": emulator.token, "anthropic-version": "2023-06-01"}
    answer = httpx2.get(url, headers=documented)
    assert answer.status_code == 200 and answer.headers["request-id"].startswith("req_")
    for headers, message in [({"x-api-key": emulator.token}, "anthropic-version: header is required"),
                             ({**documented, "anthropic-version": "2099-01-01"}, "not a valid version")]:
        refused = httpx2.get(url, headers=headers)
        assert refused.status_code == 400 and message in refused.json()["error"]["message"]


@pytest.mark.parametrize("version", ["2023-06-01", "2026-10-21"])
@pytest.mark.parametrize("scheme", ["x-api-key", "bearer"])
def test_either_key_header_with_either_version(emulator: SandboxServer, scheme: str, version: str) -> None:
    url = f"{emulator.base_url}/v1/messages/batches"

    def key(value: str) -> dict[str, str]:
        return {"x-api-key": value} if scheme == "x-api-key" else {"Authorization": f"Bearer {value}"}

    assert httpx2.get(url, headers={**key(emulator.token), "anthropic-version": version}).status_code == 200
    refused = httpx2.get(url, headers={**key("sk-ant-wrong"), "anthropic-version": version})
    assert refused.status_code == 401 and refused.json()["error"]["type"] == "authentication_error"


def test_overloaded_is_a_529_that_changes_nothing_and_the_sdk_retries(emulator: SandboxServer) -> None:
    emulator.sandbox.faults.fail_next("create_batch", "overloaded")
    before = len(emulator.sandbox.jobs)
    with pytest.raises(anthropic.OverloadedError) as shed:
        sdk(emulator).messages.batches.create(requests=REQUESTS[:1])
    assert shed.value.status_code == 529 and shed.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    assert len(emulator.sandbox.jobs) == before  # load shed before anything was made
    emulator.sandbox.faults.fail_next("list_batches", "overloaded", times=2)
    lists = sum(record.operation == "list_batches" for record in emulator.sandbox.requests)
    page = sdk(emulator, max_retries=2).messages.batches.list(limit=1)
    assert page.data is not None and sum(record.operation == "list_batches"
                                         for record in emulator.sandbox.requests) == lists + 3


def test_listing_pages_newest_first(emulator: SandboxServer) -> None:
    client = sdk(emulator)
    created = [client.messages.batches.create(requests=REQUESTS[:1]).id for _ in range(5)]
    first = client.messages.batches.list(limit=2)
    assert first.has_more and [b.id for b in first.data] == created[::-1][:2]
    assert (first.first_id, first.last_id) == (created[4], created[3])
    listed = [batch.id for batch in client.messages.batches.list(limit=2)]  # auto-paging with after_id=<last_id>
    jobs = emulator.sandbox.jobs
    assert listed[:5] == created[::-1] and listed == sorted(jobs, key=lambda batch_id: -jobs[batch_id].seq)
    newer = client.messages.batches.list(limit=2, before_id=created[1])
    assert [b.id for b in newer.data] == [created[3], created[2]] and newer.has_more
    assert [b.id for b in client.messages.batches.list(limit=2, before_id=created[3])] == [created[4]]
    for params in ({"after_id": "msgbatch_nope"}, {"limit": 0}, {"limit": 1001},
                   {"after_id": created[0], "before_id": created[1]}):
        with pytest.raises(anthropic.BadRequestError):
            client.messages.batches.list(**params)  # type: ignore[arg-type]


def test_cancel_keeps_finished_work_and_marks_the_rest_canceled(emulator: SandboxServer) -> None:
    client = sdk(emulator)
    batch = client.messages.batches.create(requests=REQUESTS)
    emulator.sandbox.clock.advance(2)  # started at 1 s: 10 of 20 requests done
    canceling = client.messages.batches.cancel(batch.id)
    assert canceling.processing_status == "canceling" and canceling.cancel_initiated_at is not None
    assert canceling.request_counts.processing == 20
    done = poll(emulator, batch.id)[-1]
    counts = done.request_counts
    assert (counts.succeeded + counts.errored, counts.canceled, counts.expired) == (10, 10, 0)
    lines = result_lines(emulator, batch.id)
    assert by_type(lines).get("canceled") == 10 and len(lines) == 20
    with pytest.raises(anthropic.BadRequestError, match="already ended"):
        client.messages.batches.cancel(batch.id)


def test_requests_the_deadline_cuts_off_expire() -> None:
    with SandboxServer(config(completion_window_s=2.5, failure_rate=0)) as server:
        server.sandbox.clock.freeze()
        batch = sdk(server).messages.batches.create(requests=REQUESTS)
        done = poll(server, batch.id)[-1]
        counts = done.request_counts  # 15 ran in the 1.5 s between start and deadline; r3 always fails
        assert (counts.succeeded, counts.errored, counts.expired) == (14, 1, 5)
        assert done.cancel_initiated_at is None and done.ended_at == done.expires_at
        assert by_type(result_lines(server, batch.id)) == {"succeeded": 14, "errored": 1, "expired": 5}


def test_delete_only_after_the_end(emulator: SandboxServer) -> None:
    client = sdk(emulator)
    batch = client.messages.batches.create(requests=REQUESTS[:2])
    with pytest.raises(anthropic.BadRequestError, match="Cancel it first"):
        client.messages.batches.delete(batch.id)
    with pytest.raises(anthropic.BadRequestError, match="results are ready once it has ended"):
        client.get(f"/v1/messages/batches/{batch.id}/results", cast_to=httpx2.Response)
    later = client.messages.batches.create(requests=REQUESTS[:1])
    poll(emulator, batch.id)
    deleted = client.messages.batches.delete(batch.id)
    assert (deleted.id, deleted.type) == (batch.id, "message_batch_deleted")
    assert batch.id not in emulator.sandbox.jobs
    for call in (client.messages.batches.retrieve, client.messages.batches.delete, client.messages.batches.cancel):
        with pytest.raises(anthropic.NotFoundError):
            call(batch.id)
    newest = client.messages.batches.create(requests=REQUESTS[:1])  # a deleted batch frees no place in the order
    assert [b.id for b in client.messages.batches.list(limit=2).data] == [newest.id, later.id]


def test_wrong_key_and_unknown_batch(emulator: SandboxServer) -> None:
    with pytest.raises(anthropic.AuthenticationError) as denied:
        sdk(emulator, api_key="sk-ant-wrong").messages.batches.list()
    body = denied.value.body
    assert denied.value.status_code == 401 and body["type"] == "error"  # type: ignore[index]
    assert body["error"]["type"] == "authentication_error" and "sk-ant-wrong" not in str(body)  # type: ignore[index]
    assert denied.value.request_id == body["request_id"]  # type: ignore[index]
    with pytest.raises(anthropic.NotFoundError) as missing:
        sdk(emulator).messages.batches.retrieve("msgbatch_nope")
    assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]


@pytest.mark.parametrize(("requests", "where"), [
    ([request("has space")], "requests.0.custom_id"),
    ([request("x" * 65)], "requests.0.custom_id"),
    ([request("a"), request("a")], "duplicate custom_id 'a'"),
    ([request("a"), {"custom_id": "b"}], "requests.1.params"),
    ([request("a"), {"custom_id": "b", "params": "not an object"}], "requests.1.params"),
    ([], "requests: a batch holds from 1"),
])
def test_malformed_requests_are_refused_whole(emulator: SandboxServer, requests: list[Any], where: str) -> None:
    """The create checks each request's envelope: its custom_id, and that it has params."""
    before = len(emulator.sandbox.jobs)
    with pytest.raises(anthropic.BadRequestError) as refused:
        sdk(emulator).messages.batches.create(requests=requests)
    assert refused.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert where in refused.value.body["error"]["message"]  # type: ignore[index]
    assert len(emulator.sandbox.jobs) == before and not emulator.sandbox.files


def test_bad_params_are_found_when_the_request_runs(emulator: SandboxServer) -> None:
    """As on the real service, params are checked asynchronously: the batch is created, and each bad request
    comes back errored with invalid_request_error naming its field, beside the good ones."""
    bad = {"no-model": {"custom_id": "no-model", "params": {"max_tokens": 5, "messages": [
               {"role": "user", "content": "x"}]}},
           "zero": request("zero", max_tokens=0),
           "no-messages": {**request("no-messages"), "params": {**request("x")["params"], "messages": []}},
           "streamed": request("streamed", stream=True)}
    batch = sdk(emulator).messages.batches.create(requests=[request("good"), *bad.values()])  # type: ignore[list-item]
    assert poll(emulator, batch.id)[-1].request_counts.errored >= len(bad)
    lines = {line.custom_id: line.result for line in result_lines(emulator, batch.id)}
    good = lines["good"]  # may fail by chance (this emulator fails 30 %), but never as an invalid request
    assert good.type == "succeeded" or good.error.error.type != "invalid_request_error"  # type: ignore[union-attr]
    for custom_id, field in [("no-model", "params.model"), ("zero", "params.max_tokens"),
                             ("no-messages", "params.messages"), ("streamed", "params.stream")]:
        result = lines[custom_id]
        assert result.type == "errored" and result.error.error.type == "invalid_request_error", custom_id
        assert field in result.error.error.message, (custom_id, result.error.error.message)


@pytest.mark.parametrize(("body", "message"), [(b"", "empty"), (b'{"requests": [', "not valid JSON"),
                                               (b'{"requests": [], "extra": 1}', "unknown field")])
def test_a_body_that_is_no_batch_is_refused(emulator: SandboxServer, body: bytes, message: str) -> None:
    answer = httpx2.post(f"{emulator.base_url}/v1/messages/batches", content=body,
                         headers={"x-api-key": emulator.token, "anthropic-version": "2023-06-01"})
    assert answer.status_code == 400 and message in answer.json()["error"]["message"]


def test_a_body_over_the_limit_is_refused_with_413() -> None:
    with SandboxServer(config(max_bytes=2_000)) as server:
        with pytest.raises(anthropic.APIStatusError) as refused:
            sdk(server).messages.batches.create(requests=REQUESTS)
        assert refused.value.status_code == 413
        assert refused.value.body["error"]["type"] == "request_too_large"  # type: ignore[index]
        assert not server.sandbox.jobs and not list(server.sandbox.uploads_dir.iterdir())


def test_rate_limit_headers_on_every_answer(emulator: SandboxServer) -> None:
    emulator.sandbox.faults.fail_next("list_batches", "rate_limit", retry_after_s=3)
    with pytest.raises(anthropic.RateLimitError) as limited:
        sdk(emulator).messages.batches.list()
    headers = limited.value.response.headers
    assert headers["retry-after"] == "3"
    assert limited.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    fine = sdk(emulator).messages.batches.with_raw_response.list()
    for answer in (limited.value.response.headers, fine.headers):
        assert int(answer["anthropic-ratelimit-requests-limit"]) == 1_000_000
        assert int(answer["anthropic-ratelimit-requests-remaining"]) < 1_000_000
        assert parse_timestamp(answer["anthropic-ratelimit-requests-reset"]) is not None


def test_the_sdk_rides_out_a_500_and_keeps_one_batch(emulator: SandboxServer) -> None:
    """The SDK retries a 500 answered before anything was made; the batch exists once."""
    emulator.sandbox.faults.fail_next("create_batch", "server_error")
    before = len(emulator.sandbox.jobs)
    batch = sdk(emulator, max_retries=2).messages.batches.create(requests=REQUESTS[:1])
    assert len(emulator.sandbox.jobs) == before + 1 and batch.id in emulator.sandbox.jobs


def test_batches_outlive_the_emulator_on_its_storage_dir(tmp_path: Path) -> None:
    """As under ``serve --sandbox``: the next emulator on the folder (built on its first call) finds the batch
    running on, and a batch deleted before the restart frees no place in the order."""
    account = config(storage_dir=tmp_path / "account")
    with SandboxServer(account) as first:
        first.sandbox.clock.freeze()
        client = sdk(first)
        kept = client.messages.batches.create(requests=REQUESTS[:2])
        gone = client.messages.batches.create(requests=REQUESTS[:1])
        poll(first, gone.id)
        gone_at = first.sandbox.jobs[gone.id].seq
        client.messages.batches.delete(gone.id)
    with SandboxServer(account, on_demand=True) as second:
        client = sdk(second)
        assert client.messages.batches.retrieve(kept.id).request_counts.processing == 2
        second.sandbox.clock.freeze()
        newest = client.messages.batches.create(requests=REQUESTS[:1])
        assert [b.id for b in client.messages.batches.list().data] == [newest.id, kept.id]
        assert second.sandbox.jobs[newest.id].seq > gone_at
        poll(second, kept.id)
        assert [line.custom_id for line in result_lines(second, kept.id)] == ["r0", "r1"]
