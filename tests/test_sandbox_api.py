"""The sandbox's contract, operation by operation: auth, validation, idempotency, paging, cancel,
results, input checks, expiry and the rate limit."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import httpx2
import pytest

from test_sandbox_support import CHAT, RESPONSES, Driver, anthropic_line, chat_line, jsonl, prompts

pytest_plugins = ["test_sandbox_support"]

API_ROUTES = [
    ("POST", "/v1/batches/files"),
    ("POST", "/v1/batches"),
    ("GET", "/v1/batches"),
    ("GET", "/v1/batches/x"),
    ("POST", "/v1/batches/x/cancel"),
    ("GET", "/v1/batches/x/results"),
]


def assert_error(response: httpx2.Response, status: int, error_id: str, *words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["id"] == error_id and body["request_id"], body
    for word in words:
        assert word in body["message"], body["message"]


def test_api_requires_the_bearer_token(driver: Driver) -> None:
    for authorization in [None, "Bearer wrong-token", "Basic sandbox-token", "sandbox-token"]:
        headers = {"Authorization": authorization} if authorization else {}
        for method, path in [*API_ROUTES, ("GET", "/_sandbox/stats")]:
            response = driver.storage.request(method, driver.server.base_url + path, headers=headers, json={})
            assert_error(response, 401, "unauthorized")


def test_file_name_is_checked(driver: Driver) -> None:
    for body in [
        {"file_name": ".jsonl"},
        {"file_name": "input.json"},
        {"file_name": "input.jsonl.txt"},
        {"file_name": 12345678},
        {},
    ]:
        assert_error(
            driver.api.post("/v1/batches/files", json=body), 422, "unprocessable_entity", "file_name"
        )
    not_json = driver.api.post(
        "/v1/batches/files", content=b"{file_name", headers={"content-type": "application/json"}
    )
    assert_error(not_json, 400, "bad_request", "JSON")
    for name in ["a.jsonl", "Batch.JSONL", "x.JsOnL"]:  # 7 characters is enough; the suffix is case-blind
        intent = driver.create_file(name)
        assert intent["upload_url"].startswith(driver.server.base_url + "/storage/uploads/")
        assert intent["expires_at"].endswith("Z")


def _tamper(url: str, **params: str) -> str:
    parsed = httpx2.URL(url)
    for name, value in params.items():
        parsed = parsed.copy_set_param(name, value)
    return str(parsed)


def test_upload_refuses_tampered_urls(driver: Driver) -> None:
    intent, other = driver.create_file(), driver.create_file()
    url = intent["upload_url"]
    expires = httpx2.URL(url).params["expires"]
    tampered = [
        _tamper(url, signature="0" * 64),
        _tamper(url, expires=str(int(expires) + 3600)),
        url.replace(intent["file_id"], other["file_id"]),
        url.split("?")[0],
    ]
    for bad in tampered:
        response = driver.storage.put(bad, content=b"{}\n")
        assert response.status_code == 403 and response.headers["content-type"] == "application/xml"
        assert "<Error><Code>" in response.text
    assert driver.storage.get(url).status_code == 405  # a PUT URL does not grant GET
    assert driver.state.files[intent["file_id"]].size is None
    assert driver.storage.put(url, content=b"{}\n").status_code == 200


def test_upload_url_expires(driver: Driver) -> None:
    intent = driver.create_file()
    driver.advance(901)
    response = driver.storage.put(intent["upload_url"], content=jsonl(prompts(1)))
    assert response.status_code == 403 and "expired" in response.text
    assert_error(driver.create_batch(intent["file_id"]), 400, "bad_request", "not been uploaded")


def test_upload_can_be_repeated_until_it_expires(driver: Driver) -> None:
    intent = driver.create_file()
    assert driver.storage.put(intent["upload_url"], content=b"partial").status_code == 200
    assert driver.storage.put(intent["upload_url"], content=jsonl(prompts(2))).status_code == 200
    assert driver.state.files[intent["file_id"]].size == len(jsonl(prompts(2)))


def test_create_batch_requires_a_completed_upload(driver: Driver) -> None:
    intent = driver.create_file()
    assert_error(
        driver.create_batch(intent["file_id"]), 400, "bad_request", "not been uploaded", "upload_url"
    )
    assert_error(driver.create_batch("6a1f0a7e-0000-4000-8000-000000000000"), 404, "not_found")


def test_create_batch_validates_the_body(driver: Driver) -> None:
    valid = {
        "file_id": driver.upload_file(jsonl(prompts(1))),
        "provider": "openai",
        "endpoint": CHAT,
        "completion_window": "24h",
        "request_id": "r-1",
    }
    cases: list[tuple[dict[str, Any], str]] = [
        ({"provider": "openai", "endpoint": None}, "endpoint is required"),
        ({"provider": "anthropic", "endpoint": CHAT}, "endpoint must be omitted"),
        ({"provider": "google"}, "provider"),
        ({"endpoint": "/v1/embeddings"}, "endpoint"),
        ({"completion_window": "48h"}, "completion_window"),
        ({"completion_window": None}, "completion_window"),
        ({"metadata": {"priority": 1}}, "metadata.priority"),
        ({"request_id": None}, "request_id"),
        ({"file_id": None}, "file_id"),
    ]
    for changes, word in cases:
        body = {key: value for key, value in {**valid, **changes}.items() if value is not None}
        assert_error(driver.api.post("/v1/batches", json=body), 422, "unprocessable_entity", word)
    assert not driver.state.jobs


def test_create_batch_is_idempotent_by_request_id(driver: Driver) -> None:
    file_id = driver.upload_file(jsonl(prompts(2)))
    first = driver.create_batch(file_id, request_id="job-1", metadata={"a": "b"})
    replay = driver.create_batch(file_id, request_id="job-1", metadata={"a": "b"})
    assert first.status_code == replay.status_code == 201
    assert replay.json()["batch_id"] == first.json()["batch_id"]
    assert len(driver.state.jobs) == 1

    conflict = driver.create_batch(file_id, request_id="job-1", metadata={"a": "c"})
    assert_error(conflict, 409, "conflict", "job-1", first.json()["batch_id"])
    assert driver.create_batch(file_id, request_id="job-2").status_code == 201


def _statuses(driver: Driver, **params: Any) -> list[str]:
    body = driver.api.get("/v1/batches", params=params).json()
    return [batch["status"] for batch in body["data"]]


def test_list_pages_newest_first_openapi(driver: Driver) -> None:
    ids = [driver.submit(prompts(1)) for _ in range(5)]
    pages, after = [], None
    while True:
        response = driver.api.get("/v1/batches", params={"limit": 2, **({"after": after} if after else {})})
        body = response.json()
        pages.append([batch["batch_id"] for batch in body["data"]])
        assert (
            body["object"] == "list" and body["first_id"] == pages[-1][0] and body["last_id"] == pages[-1][-1]
        )
        if not body["has_more"]:
            break
        after = body["last_id"]
    assert pages == [ids[4:2:-1], ids[2:0:-1], ids[:1]]

    assert len(driver.api.get("/v1/batches").json()["data"]) == 5  # default page size 20
    empty = driver.api.get("/v1/batches", params={"after": ids[0]}).json()
    assert empty == {"object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False}


def test_list_limit_is_clamped_and_bad_queries_refused(driver: Driver) -> None:
    for _ in range(3):
        driver.submit(prompts(1))
    assert len(driver.api.get("/v1/batches", params={"limit": 0}).json()["data"]) == 1
    assert len(driver.api.get("/v1/batches", params={"limit": 1000}).json()["data"]) == 3
    assert_error(driver.api.get("/v1/batches", params={"limit": "many"}), 400, "bad_request", "limit")
    assert_error(driver.api.get("/v1/batches", params={"status": "queued"}), 400, "bad_request", "status")
    assert_error(driver.api.get("/v1/batches", params={"after": "nope"}), 400, "bad_request", "after")


def test_list_filters_by_status(start_sandbox: Callable[..., Driver]) -> None:
    driver = start_sandbox(validating_s=5)  # long enough that real time cannot end it during the test
    done = driver.submit(prompts(1))
    driver.advance(100)
    running = driver.submit(prompts(10_000))
    driver.advance(5.5)
    fresh = driver.submit(prompts(1))

    def ids(status: str) -> list[str]:
        return [
            b["batch_id"] for b in driver.api.get("/v1/batches", params={"status": status}).json()["data"]
        ]

    assert ids("completed") == [done]
    assert ids("in_progress") == [running]
    assert ids("validating") == [fresh]
    assert ids("failed") == []


def test_list_pages_with_cursors_godo(start_sandbox: Callable[..., Driver]) -> None:
    driver = start_sandbox(dialect="godo", queued_s=60)  # advancing 0.3 s lands in queued, however slow the machine
    ids = [driver.submit(prompts(1)) for _ in range(3)]
    first = driver.api.get("/v1/batches", params={"limit": 2}).json()
    assert [edge["node"]["batch_id"] for edge in first["edges"]] == [ids[2], ids[1]]
    assert first["page_info"]["hasNextPage"] is True
    cursor = first["page_info"]["endCursor"]
    assert cursor == first["edges"][-1]["cursor"]
    assert set(json.loads(base64.urlsafe_b64decode(cursor))) == {"c", "i"}  # opaque, but shaped like DO's

    second = driver.api.get("/v1/batches", params={"limit": 2, "after": cursor}).json()
    assert [edge["node"]["batch_id"] for edge in second["edges"]] == [ids[0]]
    assert second["page_info"]["hasNextPage"] is False

    driver.advance(0.3)
    assert [
        e["node"]["status"]
        for e in driver.api.get("/v1/batches", params={"status": "queued"}).json()["edges"]
    ] == ["queued"] * 3
    assert_error(driver.api.get("/v1/batches", params={"after": "%%%"}), 400, "bad_request", "endCursor")


def test_cancel_is_refused_while_validating_and_when_terminal(driver: Driver) -> None:
    batch_id = driver.submit(prompts(3))
    assert_error(driver.api.post(f"/v1/batches/{batch_id}/cancel"), 409, "conflict", "validating", "provider")
    driver.finish(batch_id)
    assert_error(driver.api.post(f"/v1/batches/{batch_id}/cancel"), 409, "conflict", "completed")
    assert_error(driver.api.post("/v1/batches/unknown/cancel"), 404, "not_found")


@pytest.mark.parametrize("dialect", ["openapi", "godo"])
def test_cancel_keeps_partial_results(start_sandbox: Callable[..., Driver], dialect: str) -> None:
    driver = start_sandbox(dialect=dialect, requests_per_s=100)
    driver.state.clock.freeze()
    batch_id = driver.submit(prompts(300))
    driver.advance(0.4 + 1.005)  # validating + queued, then 100 requests
    response = driver.api.post(f"/v1/batches/{batch_id}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelling"
    frozen = response.json()["request_counts"]
    assert frozen["completed"] == 100 and frozen["total"] == 300
    assert driver.api.post(f"/v1/batches/{batch_id}/cancel").json()["status"] == "cancelling"  # no-op repeat

    driver.advance(0.1)
    assert driver.batch(batch_id)["status"] == "cancelling"
    driver.advance(0.2)
    final = driver.batch(batch_id)
    assert final["status"] == "cancelled" and final["request_counts"] == frozen
    assert_error(driver.api.post(f"/v1/batches/{batch_id}/cancel"), 409, "conflict", "cancelled")

    links = driver.results(batch_id)
    url = links["output_file_url"] if dialect == "openapi" else links["download"]["presigned_url"]
    assert len(driver.download(url)) == frozen["completed"]
    if dialect == "openapi":
        assert final["cancelled_at"] > final["in_progress_at"]
    else:
        assert final["cancel_requested_at"] < final["updated_at"]


def test_results_wait_for_a_terminal_status(driver: Driver) -> None:
    batch_id = driver.submit(prompts(1000))
    assert_error(
        driver.api.get(f"/v1/batches/{batch_id}/results"), 412, "precondition_failed", "not yet available"
    )
    driver.advance(0.5)
    assert driver.batch(batch_id)["status"] == "in_progress"
    assert driver.api.get(f"/v1/batches/{batch_id}/results").status_code == 412
    assert_error(driver.api.get("/v1/batches/unknown/results"), 404, "not_found")
    assert_error(driver.api.get("/v1/batches/unknown"), 404, "not_found")


def _failed_errors(driver: Driver, lines: list[Any], **options: Any) -> list[dict[str, Any]]:
    batch_id = driver.submit(lines, **options)
    final = driver.finish(batch_id)
    assert final["status"] == "failed" and final["failed_at"] and final["output_file_id"] is None
    assert final["request_counts"] == {"total": 0, "completed": 0, "failed": 0}
    return final["errors"]


def test_invalid_input_fails_with_one_based_line_numbers(driver: Driver) -> None:
    lines = [
        chat_line("a", "fine"),
        "{not json",
        chat_line("a", "duplicate id"),
        "",  # blank lines are skipped but still numbered
        chat_line("c", "wrong endpoint", url=RESPONSES),
        {
            "custom_id": "d",
            "method": "POST",
            "url": CHAT,
            "body": {"messages": [{"role": "user", "content": "x"}]},
        },
        [1, 2],
        chat_line("e", "fine"),
    ]
    errors = _failed_errors(driver, lines)
    assert [(e["line"], e["code"]) for e in errors] == [(n, "invalid_input_file") for n in (2, 3, 5, 6, 7)]
    messages = [e["message"] for e in errors]
    assert messages[0].startswith("Line 2: invalid JSON")
    assert "duplicate custom_id 'a'" in messages[1] and "line 1" in messages[1]
    assert "does not match the batch endpoint" in messages[2]
    assert messages[3] == "Line 6: missing required field 'body.model'."
    assert "JSON object" in messages[4]


def test_invalid_anthropic_lines(driver: Driver) -> None:
    errors = _failed_errors(
        driver,
        [anthropic_line("ok", "x"), anthropic_line("has space", "x"), chat_line("openai-shaped", "x")],
        provider="anthropic",
    )
    assert [e["line"] for e in errors] == [2, 3]
    assert "custom_id" in errors[0]["message"] and "params" in errors[1]["message"]


def test_file_limits(start_sandbox: Callable[..., Driver]) -> None:
    driver = start_sandbox(max_requests=3, max_bytes=2_000)
    [too_many] = _failed_errors(driver, prompts(5))
    assert too_many["line"] == 4 and "more than 3 requests" in too_many["message"]
    [too_big] = _failed_errors(driver, [chat_line("big", "x" * 3_000)])
    assert too_big["line"] is None and "limit is 2000 bytes" in too_big["message"]
    [empty] = _failed_errors(driver, [""])
    assert "no requests" in empty["message"]


def test_failed_job_results_are_never_available(driver: Driver) -> None:
    batch_id = driver.submit(["oops"])
    driver.finish(batch_id)
    assert driver.results(batch_id) == {
        "batch_id": batch_id,
        "result_available": False,
        "output_file_url": None,
        "error_file_url": None,
        "expires_at": None,
    }


def test_jobs_expire_after_the_completion_window_keeping_partial_results(
    start_sandbox: Callable[..., Driver],
) -> None:
    driver = start_sandbox(completion_window_s=10, requests_per_s=10)
    batch_id = driver.submit(prompts(200))
    job = driver.batch(batch_id)
    assert job["expires_at"] > job["created_at"]
    driver.advance(9)
    assert driver.batch(batch_id)["status"] == "in_progress"
    final = driver.finish(batch_id, seconds=5)
    assert final["status"] == "expired" and final["completed_at"] is None
    assert 80 <= final["request_counts"]["completed"] <= 100
    lines = driver.download(driver.results(batch_id)["output_file_url"])
    assert len(lines) == final["request_counts"]["completed"]


def test_a_job_can_expire_while_validating(start_sandbox: Callable[..., Driver]) -> None:
    driver = start_sandbox(completion_window_s=0.1, validating_s=1)
    batch_id = driver.submit(prompts(3))
    final = driver.finish(batch_id, seconds=2)
    assert final["status"] == "expired" and final["request_counts"]["total"] == 0
    assert driver.download(driver.results(batch_id)["output_file_url"]) == []


def test_rate_limit_budget_and_headers(start_sandbox: Callable[..., Driver]) -> None:
    driver = start_sandbox(rate_limit_per_minute=3)
    intent = driver.create_file()
    remaining = [driver.api.get("/v1/batches").headers["ratelimit-remaining"] for _ in range(2)]
    assert remaining == ["1", "0"]
    limited = driver.api.get("/v1/batches")
    assert_error(limited, 429, "too_many_requests")
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert limited.headers["ratelimit-limit"] == "3"
    assert int(limited.headers["ratelimit-reset"]) >= int(driver.state.clock.now())

    upload = driver.storage.put(intent["upload_url"], content=jsonl(prompts(1)))  # storage is not metered
    assert upload.status_code == 200 and upload.headers["ratelimit-remaining"] == "0"
    unrouted = driver.api.get("/nowhere")
    assert_error(unrouted, 404, "not_found")
    assert unrouted.headers["ratelimit-remaining"] == "0"
    driver.advance(61)
    assert driver.api.get("/v1/batches").status_code == 200
