"""Conformance with DigitalOcean's OpenAPI extract, in the openapi dialect.

The driver validates every response it receives against the operation's declared response (status,
rate-limit headers, JSON body); that holds for every sandbox test. This test drives the sandbox into
every (operation, status) pair it can emit, as listed in ``RESPONSE_STATUSES``, and checks that the
list is complete and true.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx2

from batch_mcp.sandbox.app import RESPONSE_STATUSES

from test_sandbox_support import SPEC_OPERATIONS, Driver, contract, jsonl, one_call_per_operation, prompts

pytest_plugins = ["test_sandbox_support"]

#: Emitted statuses the spec only covers through its ``default`` error response.
VIA_DEFAULT = {("list_batches", 400)}


def _tampered(url: str) -> str:
    return str(httpx2.URL(url).copy_set_param("signature", "0" * 64))


def test_every_operation_and_status_conforms(start_sandbox: Callable[..., Driver]) -> None:
    driver = start_sandbox(cancelling_s=60)
    api, bare = driver.api, driver.storage  # bare: the same checks, without the token

    calls = one_call_per_operation(driver)  # the 2xx of every operation (and of results: available)
    for call in calls.values():
        call()
    for operation, call in calls.items():  # 429 and 500 everywhere
        for kind in ("rate_limit", "server_error"):
            driver.state.faults.fail_next(operation, kind)  # type: ignore[arg-type]
            call()

    running = driver.submit(prompts(5_000))
    failed = driver.submit(["not json"])
    driver.advance(0.5)
    api.get(f"/v1/batches/{running}/results")  # 412
    api.get(f"/v1/batches/{failed}/results")  # 200, result_available false
    for method, path in [
        ("POST", "/v1/batches/files"),
        ("POST", "/v1/batches"),
        ("GET", "/v1/batches"),
        ("GET", f"/v1/batches/{running}"),
        ("POST", f"/v1/batches/{running}/cancel"),
        ("GET", f"/v1/batches/{running}/results"),
    ]:
        bare.request(method, driver.server.base_url + path, json={})  # 401
    for path in ["/v1/batches/unknown", "/v1/batches/unknown/cancel", "/v1/batches/unknown/results"]:
        api.request("POST" if path.endswith("cancel") else "GET", path)  # 404

    intent = driver.create_file()
    bare.put(_tampered(intent["upload_url"]), content=b"{}")  # 403
    bare.get(_tampered(driver.results(driver.finish(running)["batch_id"])["output_file_url"]))  # 403
    api.post("/v1/batches/files", content=b"{", headers={"content-type": "application/json"})  # 400
    api.post("/v1/batches/files", json={"file_name": "x.txt"})  # 422
    driver.create_batch(intent["file_id"])  # 400: not uploaded
    driver.create_batch("no-such-file")  # 404
    driver.create_batch(driver.upload_file(jsonl(prompts(1))), endpoint=None)  # 422
    driver.create_batch(driver.upload_file(jsonl(prompts(1))), request_id="same")  # 409: same key, other file
    api.post(f"/v1/batches/{failed}/cancel")  # 409: terminal
    api.get("/v1/batches", params={"limit": "ten"})  # 400

    emitted = {pair for pair in driver.seen if pair[0] != "other"}
    declared = {
        (operation, status) for operation, statuses in RESPONSE_STATUSES.items() for status in statuses
    }
    assert emitted == declared, f"never emitted: {declared - emitted}; undeclared: {emitted - declared}"
    spec = contract()
    for operation, status in sorted(declared - VIA_DEFAULT):
        if operation in SPEC_OPERATIONS:
            assert spec.declared(operation, str(status)) is not None, f"the spec lacks {operation} {status}"
