"""Fault injection, from Python and over the admin routes: errors, 429s, dropped connections,
slowness, early-expiring upload URLs, plus the request log and stats."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import httpx2
import pytest

from batch_mcp.sandbox.pipeline import REDIRECT_HOST

from test_sandbox_support import Driver, jsonl, one_call_per_operation, prompts

pytest_plugins = ["test_sandbox_support"]


def test_injected_errors_hit_only_the_next_calls(start_sandbox: Callable[..., Driver]) -> None:
    driver = start_sandbox(cancelling_s=60)
    for operation, call in one_call_per_operation(driver).items():
        driver.state.faults.fail_next(operation, "server_error", times=2)  # type: ignore[arg-type]
        failures = [call(), call()]
        assert [r.status_code for r in failures] == [500, 500], operation
        assert all(r.json()["id"] == "server_error" and r.json()["request_id"] for r in failures)
        assert call().status_code in (200, 201), operation

        driver.state.faults.fail_next(operation, "rate_limit", retry_after_s=7)  # type: ignore[arg-type]
        limited = call()
        assert limited.status_code == 429 and limited.headers["retry-after"] == "7", operation
        assert limited.json()["id"] == "too_many_requests"
        assert call().status_code in (200, 201), operation


def test_dropped_connections_raise_protocol_errors(start_sandbox: Callable[..., Driver]) -> None:
    driver = start_sandbox(cancelling_s=60)
    for operation, call in one_call_per_operation(driver).items():
        driver.state.faults.fail_next(operation, "drop")  # type: ignore[arg-type]
        with pytest.raises(httpx2.RemoteProtocolError):
            call()
        assert call().status_code in (200, 201), operation


def test_a_drop_during_upload_leaves_no_file(driver: Driver) -> None:
    intent = driver.create_file()
    driver.state.faults.fail_next("upload", "drop")
    with pytest.raises(httpx2.TransportError):
        driver.storage.put(intent["upload_url"], content=jsonl(prompts(20_000)))  # about 2 MB
    assert driver.state.files[intent["file_id"]].size is None
    assert not list(driver.state.uploads_dir.iterdir())
    assert driver.create_batch(intent["file_id"]).status_code == 400  # the HEAD check sees no object

    assert driver.storage.put(intent["upload_url"], content=jsonl(prompts(20_000))).status_code == 200
    assert driver.create_batch(intent["file_id"]).status_code == 201


def test_an_upload_aborted_by_the_client_leaves_no_file(driver: Driver) -> None:
    intent = driver.create_file()
    url = httpx2.URL(intent["upload_url"])
    head = (
        f"PUT {url.raw_path.decode()} HTTP/1.1\r\nHost: {url.netloc.decode()}\r\nContent-Length: 999999\r\n"
    )
    with socket.create_connection((url.host, url.port)) as connection:  # a tenth of the promised body
        connection.sendall(head.encode() + b"\r\n" + b"x" * 100_000)
        time.sleep(0.1)
    time.sleep(0.1)
    assert driver.state.files[intent["file_id"]].size is None
    assert not list(driver.state.uploads_dir.iterdir())
    assert driver.storage.put(intent["upload_url"], content=jsonl(prompts(1))).status_code == 200


def test_redirected_storage_stores_nothing_and_conflicts_answer_409(driver: Driver) -> None:
    """S3's answer for a bucket in another region, and a create answered 409, both on demand."""
    intent = driver.create_file()
    signed = httpx2.URL(intent["upload_url"])
    driver.state.faults.fail_next("upload", "redirect")
    with httpx2.Client() as plain:  # not the driver's: the spec declares no 307, which S3 sends beyond it
        moved = plain.put(signed, content=jsonl(prompts(1)))
    location = httpx2.URL(moved.headers["location"])
    assert moved.status_code == 307 and "<Code>TemporaryRedirect</Code>" in moved.text
    assert (location.host, location.path, location.query) == (REDIRECT_HOST, signed.path, signed.query)
    assert driver.state.files[intent["file_id"]].size is None
    assert driver.storage.put(signed, content=jsonl(prompts(1))).status_code == 200

    driver.state.faults.fail_next("create_batch", "conflict", times=2)
    answers = [driver.create_batch(intent["file_id"], request_id="same-key") for _ in range(3)]
    assert [r.status_code for r in answers] == [409, 409, 201] and answers[0].json()["id"] == "conflict"


def test_slow_operations(driver: Driver) -> None:
    driver.state.faults.slow("list_batches", 0.3)
    started = time.monotonic()
    assert driver.api.get("/v1/batches").status_code == 200
    assert time.monotonic() - started >= 0.3
    driver.state.faults.slow("list_batches", 0)
    started = time.monotonic()
    driver.api.get("/v1/batches")
    assert time.monotonic() - started < 0.3


def test_upload_urls_can_be_expired_early(driver: Driver) -> None:
    before = driver.create_file()
    driver.state.expire_upload_urls()
    refused = driver.storage.put(before["upload_url"], content=jsonl(prompts(1)))
    assert refused.status_code == 403 and "expired" in refused.text
    assert (
        driver.storage.put(driver.create_file()["upload_url"], content=jsonl(prompts(1))).status_code == 200
    )

    driver.state.faults.upload_url_ttl_s = 5
    short = driver.create_file()
    assert driver.storage.put(short["upload_url"], content=jsonl(prompts(1))).status_code == 200
    driver.advance(6)
    assert driver.storage.put(short["upload_url"], content=jsonl(prompts(1))).status_code == 403


def test_admin_routes(start_sandbox: Callable[..., Driver]) -> None:
    driver = start_sandbox(rate_limit_per_minute=5)
    admin = driver.api

    def post(path: str, body: dict | None = None) -> None:
        response = admin.post(f"/_sandbox/{path}", json=body or {})
        assert response.status_code == 204, response.text

    post("faults", {"operation": "list_batches", "kind": "rate_limit", "retry_after_s": 3})
    assert driver.api.get("/v1/batches").headers["retry-after"] == "3"
    post("faults", {"operation": "create_file", "times": 2})
    assert driver.api.post("/v1/batches/files", json={"file_name": "f.jsonl"}).status_code == 500
    post("slow", {"operation": "get_batch", "seconds": 2})
    post("reset-faults")
    assert driver.api.post("/v1/batches/files", json={"file_name": "f.jsonl"}).status_code == 201
    assert driver.state.faults.delay("get_batch") == 0

    intent = driver.create_file()
    post("expire-upload-urls", {"ttl_s": 30})
    assert driver.storage.put(intent["upload_url"], content=b"{}").status_code == 403
    assert driver.state.faults.upload_url_ttl_s == 30
    post("advance-clock", {"seconds": 61})  # the rate budget (5) refills
    for _ in range(8):  # admin calls are not metered
        assert admin.get("/_sandbox/stats").status_code == 200

    assert admin.get("/_sandbox/stats").json() == {
        "jobs": 0,
        "files": 2,
        "uploaded_files": 0,
        "requests": len(driver.state.requests),
    }
    log = admin.get("/_sandbox/requests").json()
    assert log[0] == {
        "operation": "admin",
        "method": "POST",
        "path": "/_sandbox/faults",
        "authorization": True,
        "host": driver.server.base_url.removeprefix("http://"),
    }
    upload = next(record for record in log if record["operation"] == "upload")
    assert upload["method"] == "PUT" and upload["authorization"] is False

    unknown = admin.post("/_sandbox/faults", json={"operation": "teleport"})
    assert unknown.status_code == 422 and "operation" in unknown.json()["message"]
    assert admin.post("/_sandbox/slow", json={"operation": "get_batch", "seconds": -1}).status_code == 422
    with pytest.raises(ValueError, match="unknown operation"):
        driver.state.faults.fail_next("teleport")  # type: ignore[arg-type]
