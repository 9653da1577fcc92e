"""End-to-end runs against the sandbox over loopback: lifecycle, result files, storage credentials."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anyio
import httpx2
import pytest

from test_sandbox_support import CHAT, RESPONSES, Driver, anthropic_line, chat_line, prompts

pytest_plugins = ["test_sandbox_support"]

OPENAPI_BATCH_FIELDS = {
    "batch_id",
    "status",
    "provider",
    "endpoint",
    "completion_window",
    "input_file_id",
    "output_file_id",
    "error_file_id",
    "request_counts",
    "request_id",
    "metadata",
    "errors",
    "created_at",
    "in_progress_at",
    "finalizing_at",
    "completed_at",
    "expires_at",
    "cancelled_at",
    "failed_at",
}
GODO_BATCH_FIELDS = {
    "batch_id",
    "provider",
    "file_id",
    "completion_window",
    "status",
    "request_id",
    "request_counts",
    "result_available",
    "cancel_requested_at",
    "created_at",
    "updated_at",
    "expires_at",
}


def _poll_statuses(driver: Driver, batch_id: str, timeout_s: float = 10) -> tuple[list[str], dict[str, Any]]:
    """Poll in real time until terminal; return the distinct statuses seen, in order, and the last body."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        body = driver.batch(batch_id)
        if not seen or seen[-1] != body["status"]:
            seen.append(body["status"])
        if body["status"] in ("completed", "failed", "expired", "cancelled"):
            return seen, body
        time.sleep(0.02)
    raise AssertionError(f"batch still {seen[-1]} after {timeout_s}s")


def test_whole_flow_openapi(start_sandbox: Callable[..., Driver]) -> None:
    driver = start_sandbox(requests_per_s=400)
    lines = [*prompts(200), chat_line("doomed", "Summarize this [[fail]] please")]
    batch_id = driver.submit(lines, metadata={"team": "eval"})

    statuses, final = _poll_statuses(driver, batch_id)
    assert statuses[0] == "validating" and statuses[-1] == "completed"
    assert "in_progress" in statuses and "queued" not in statuses  # the spec's enum has no queued
    assert set(final) == OPENAPI_BATCH_FIELDS
    assert final["request_counts"] == {"total": 201, "completed": 200, "failed": 1}
    assert final["metadata"] == {"team": "eval"} and final["errors"] is None
    stamps = [final[k] for k in ("created_at", "in_progress_at", "finalizing_at", "completed_at")]
    assert stamps == sorted(stamps) and all(s.endswith("Z") for s in stamps)
    assert final["output_file_id"] and final["error_file_id"]

    results = driver.results(batch_id)
    assert results["result_available"] is True and results["batch_id"] == batch_id
    output, errors = driver.download(results["output_file_url"]), driver.download(results["error_file_url"])
    assert sorted(line["custom_id"] for line in output) == sorted(f"req-{i}" for i in range(200))
    assert [line["custom_id"] for line in errors] == ["doomed"]


def test_whole_flow_godo(start_sandbox: Callable[..., Driver]) -> None:
    driver = start_sandbox(dialect="godo")
    batch_id = driver.submit(
        [anthropic_line(f"r{i}", f"Summarize note {i}") for i in range(50)], provider="anthropic"
    )

    statuses, final = _poll_statuses(driver, batch_id)
    assert statuses[0] == "validating" and "queued" in statuses and statuses[-1] == "completed"
    assert set(final) == GODO_BATCH_FIELDS
    assert final["result_available"] is True and final["request_counts"]["completed"] == 50

    results = driver.results(batch_id)
    assert results["output_file_id"] == driver.state.jobs[batch_id].output_file_id
    assert results["download"]["expires_at"].endswith("Z")
    assert len(driver.download(results["download"]["presigned_url"])) == 50
    assert results["error_file_url"] is None


@pytest.mark.parametrize("endpoint", [CHAT, RESPONSES])
def test_openai_result_lines(driver: Driver, endpoint: str) -> None:
    batch_id = driver.submit(
        [
            chat_line(
                "sum",
                "Summarize the following article: Rome was not built in a day, it took ages and ages",
                endpoint,
            ),
            chat_line(
                "cls", "Classify this review as positive or negative: I loved it, a great phone", endpoint
            ),
            chat_line("bad", "[[fail]] anything", endpoint),
        ],
        endpoint=endpoint,
    )
    assert driver.finish(batch_id)["status"] == "completed"
    results = driver.results(batch_id)
    output = {line["custom_id"]: line for line in driver.download(results["output_file_url"])}

    assert set(output) == {"sum", "cls"}  # openai failures go to the error file only
    for line in output.values():
        assert line["id"].startswith("batch_req_") and line["error"] is None
        assert line["response"]["status_code"] == 200 and line["response"]["request_id"]
    summary, label = output["sum"]["response"]["body"], output["cls"]["response"]["body"]
    if endpoint == CHAT:
        assert summary["choices"][0]["message"]["content"].startswith(
            "Summary: Summarize the following article:"
        )
        assert label["choices"][0]["message"]["content"] == "positive"
        usage = summary["usage"]
        assert (
            usage["prompt_tokens"] > 0
            and usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        )
    else:
        assert summary["output"][0]["content"][0]["text"] == summary["output_text"]
        assert label["output_text"] == "positive"
        assert summary["usage"]["input_tokens"] > 0 and summary["usage"]["output_tokens"] > 0

    [failure] = driver.download(results["error_file_url"])
    assert failure["custom_id"] == "bad" and failure["response"] is None
    assert failure["error"]["code"] in {"context_length_exceeded", "invalid_request_error", "server_error"}


def test_anthropic_result_lines(driver: Driver) -> None:
    batch_id = driver.submit(
        [
            anthropic_line("ok", "Classify the sentiment: terrible, broken on arrival"),
            anthropic_line("ko", "[[fail]]"),
        ],
        provider="anthropic",
    )
    driver.finish(batch_id)
    results = driver.results(batch_id)
    output = {line["custom_id"]: line["result"] for line in driver.download(results["output_file_url"])}

    message = output["ok"]["message"]
    assert (
        output["ok"]["type"] == "succeeded"
        and message["type"] == "message"
        and message["role"] == "assistant"
    )
    assert (
        message["content"] == [{"type": "text", "text": "negative"}] and message["stop_reason"] == "end_turn"
    )
    assert message["usage"]["input_tokens"] > 0 and message["model"] == "claude-3-5-haiku-latest"
    assert output["ko"]["type"] == "errored"
    assert output["ko"]["error"]["error"]["type"] in {
        "overloaded_error",
        "invalid_request_error",
        "api_error",
    }
    assert driver.download(results["error_file_url"]) == [{"custom_id": "ko", "result": output["ko"]}]


def test_results_are_deterministic_and_failures_move_with_the_batch(
    start_sandbox: Callable[..., Driver],
) -> None:
    driver = start_sandbox(failure_rate=0.5)
    lines = prompts(40)
    first, second = driver.submit(lines), driver.submit(lines)
    driver.advance(600)

    def failed_ids(batch_id: str) -> set[str]:
        links = driver.results(batch_id)
        return {line["custom_id"] for line in driver.download(links["error_file_url"])}

    assert failed_ids(first) == failed_ids(first)  # fresh URLs, same bytes
    assert 5 < len(failed_ids(first)) < 35
    assert failed_ids(first) != failed_ids(second)  # a retry in a new batch draws again


def test_download_urls_are_fresh_signed_and_expire(driver: Driver) -> None:
    batch_id = driver.submit(prompts(3))
    driver.finish(batch_id)
    first, second = driver.results(batch_id), driver.results(batch_id)
    assert first["output_file_url"] != second["output_file_url"]  # a new URL per call (later expiry)

    url = httpx2.URL(second["output_file_url"])
    tampered = url.copy_set_param("signature", "0" * 64)
    assert driver.storage.get(tampered).status_code == 403
    assert "<Code>SignatureDoesNotMatch</Code>" in driver.storage.get(tampered).text
    other_file = str(url).replace(
        driver.state.jobs[batch_id].output_file_id, driver.state.jobs[batch_id].error_file_id
    )
    assert driver.storage.get(other_file).status_code == 403

    driver.advance(3601)
    expired = driver.storage.get(url)
    assert expired.status_code == 403 and "expired" in expired.text


def test_the_token_never_reaches_storage(driver: Driver) -> None:
    batch_id = driver.submit([*prompts(5), chat_line("x", "[[fail]]")])
    driver.finish(batch_id)
    links = driver.results(batch_id)
    driver.download(links["output_file_url"])
    driver.download(links["error_file_url"])

    records = driver.state.requests
    storage = [r for r in records if r.operation in ("upload", "download")]
    assert [r.operation for r in storage] == ["upload", "download", "download"]
    assert not any(r.authorization for r in storage)
    assert all(r.authorization for r in records if r.operation not in ("upload", "download"))
    assert {r.host for r in records} == {driver.server.base_url.removeprefix("http://")}
    assert all("?" not in r.path and "signature" not in r.path for r in records)


async def test_fifty_thousand_requests_without_stalling_the_server(
    start_sandbox: Callable[..., Driver],
) -> None:
    driver = start_sandbox(failure_rate=0.03)
    batch_id = driver.submit(prompts(50_000))
    driver.advance(0.3)  # validation is due: the next read of the job runs it, in a worker thread
    validating, answered = True, 0
    async with httpx2.AsyncClient(
        base_url=driver.server.base_url, headers=driver.api.headers, timeout=30
    ) as client:

        async def read_job() -> None:
            nonlocal validating
            assert (await client.get(f"/v1/batches/{batch_id}")).status_code == 200
            validating = False

        async with anyio.create_task_group() as group:
            group.start_soon(read_job)
            await anyio.sleep(0.02)
            while validating:  # a blocked loop would answer these only once validation is over
                assert (await client.get("/_sandbox/stats")).status_code == 200
                answered += 1
    assert answered >= 3

    final = driver.finish(batch_id, seconds=3600)
    counts = final["request_counts"]
    assert final["status"] == "completed" and counts["total"] == 50_000
    assert 1000 < counts["failed"] < 2000 and counts["completed"] + counts["failed"] == 50_000
    links = driver.results(batch_id)
    assert len(driver.download(links["output_file_url"])) == counts["completed"]
