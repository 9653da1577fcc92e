"""DigitalOcean's own Python client, pydo, runs its batch flow against the DigitalOcean sandbox.

pydo 0.44.0's batch operations (``client.inference.*``) are generated from the OpenAPI spec but return
plain dicts, validating nothing; so every answer is checked here against the keys pydo's own docstrings
declare as required. The godo dialect answers with the shapes DigitalOcean's Go client parses, which
pydo's docstrings do not describe: there the checks are that pydo still gets through the flow, and that
its own results helper still finds the download link.

Two things pydo needs to talk to a loopback sandbox:
- ``inference_endpoint=`` the sandbox origin (pydo otherwise prefixes ``https://inference.do-ai.run``);
- ``enforce_https=False`` on each call: azure-core's bearer-token policy refuses to send a token over
  plain HTTP. pydo's convenience wrappers (``client.batches.create``, ``client.files.create``) pass only
  a fixed set of keyword arguments through, so they cannot reach a plain-HTTP endpoint at all and are
  not exercised here. The generated operation for the upload PUT targets the literal path
  ``/<upload_url>``, so the file goes to its presigned URL with httpx2 and no token, as the spec says.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from batch_mcp.sandbox import SandboxConfig, SandboxServer

from test_sandbox_support import CHAT, FAST, jsonl, prompts

pydo = pytest.importorskip("pydo")
from azure.core.exceptions import ServiceRequestError  # noqa: E402  (azure-core comes with pydo)

PLAIN_HTTP = {"enforce_https": False}
TERMINAL = {"completed", "failed", "expired", "cancelled"}
#: Required keys of each answer, as pydo 0.44.0's generated docstrings declare them.
INTENT_KEYS = {"file_id", "upload_url"}
BATCH_KEYS = {"batch_id", "status", "provider", "completion_window", "input_file_id", "created_at"}
RESULTS_KEYS = {"batch_id", "result_available"}
LIST_KEYS = {"object", "data", "has_more"}
ERROR_KEYS = {"id", "message"}


class Recorded:
    """pydo's ``cls`` hook: keeps the response headers pydo itself deserialized, returns the body."""

    def __init__(self) -> None:
        self.headers: list[dict[str, Any]] = []

    def __call__(self, pipeline_response: Any, body: Any, headers: dict[str, Any]) -> Any:
        self.headers.append(headers)
        return body


@pytest.fixture(params=["openapi", "godo"])
def sandbox(request: pytest.FixtureRequest) -> Iterator[SandboxServer]:
    # A long cancelling phase keeps the second batch observably in ``cancelling``.
    config = SandboxConfig(dialect=request.param, **{**FAST, "cancelling_s": 600})
    with SandboxServer(config) as server:
        yield server


@pytest.fixture
def client(sandbox: SandboxServer) -> Any:
    return pydo.Client(sandbox.token, inference_endpoint=sandbox.base_url, retry_total=0)


def upload(client: Any, name: str, content: bytes) -> str:
    """File intent through pydo, then the bytes to the presigned URL with no Authorization header."""
    intent = client.inference.create_batch_file({"file_name": name}, **PLAIN_HTTP)
    assert intent.keys() >= INTENT_KEYS, intent
    put = httpx2.put(intent["upload_url"], content=content, headers={"Content-Type": "application/octet-stream"})
    assert put.status_code == 200, put.text
    file_id: str = intent["file_id"]
    return file_id


def create(client: Any, file_id: str, request_id: str) -> dict[str, Any]:
    body = {"file_id": file_id, "provider": "openai", "completion_window": "24h", "request_id": request_id,
            "endpoint": CHAT, "metadata": {"team": "support"}}
    batch: dict[str, Any] = client.inference.create_batch(body, **PLAIN_HTTP)
    assert batch.keys() >= {"batch_id", "status"}, batch
    return batch


def check_batch(batch: dict[str, Any], dialect: str) -> None:
    """The batch object against pydo's declared shape (openapi), or godo's input-file name (godo)."""
    if dialect == "openapi":
        assert batch.keys() >= BATCH_KEYS, BATCH_KEYS - batch.keys()
    else:
        assert "file_id" in batch and "result_available" in batch, batch


def test_pydo_runs_the_whole_flow(client: Any, sandbox: SandboxServer) -> None:
    dialect = sandbox.sandbox.config.dialect
    recorded = Recorded()
    file_id = upload(client, "tickets.jsonl", jsonl(prompts(3)))
    batch = create(client, file_id, "pydo-flow-1")
    check_batch(batch, dialect)
    assert batch["status"] not in TERMINAL
    if dialect == "openapi":
        assert batch["input_file_id"] == file_id and batch["metadata"] == {"team": "support"}

    # Poll as a pydo user would, moving the sandbox clock instead of sleeping.
    for _ in range(20):
        batch = client.inference.get_batch(batch["batch_id"], cls=recorded, **PLAIN_HTTP)
        if batch["status"] in TERMINAL:
            break
        sandbox.sandbox.clock.advance(1)
    assert batch["status"] == "completed", batch
    check_batch(batch, dialect)
    assert batch["request_counts"] == {"total": 3, "completed": 3, "failed": 0}
    # pydo parses ratelimit-* as integers on every documented status; a missing header would be None.
    assert all(isinstance(h["ratelimit-remaining"], int) for h in recorded.headers), recorded.headers

    links = client.inference.get_batch_results(batch["batch_id"], **PLAIN_HTTP)
    if dialect == "openapi":
        assert links.keys() >= RESULTS_KEYS and links["result_available"] is True, links
        url = links["output_file_url"]
    else:
        url = links["download"]["presigned_url"]
    downloaded = httpx2.get(url)
    assert downloaded.status_code == 200
    lines = [json.loads(line) for line in downloaded.text.splitlines()]
    assert sorted(line["custom_id"] for line in lines) == ["req-0", "req-1", "req-2"]
    assert all(line["response"]["status_code"] == 200 for line in lines)
    # pydo's own download helper probes both result shapes for the link, then fetches it.
    assert client.files.content(batch["batch_id"], **PLAIN_HTTP).text == downloaded.text

    page = client.inference.list_batches(limit=1, **PLAIN_HTTP)
    if dialect == "openapi":
        assert page.keys() >= LIST_KEYS and page["object"] == "list", page
        assert [b["batch_id"] for b in page["data"]] == [batch["batch_id"]] and page["has_more"] is False
        assert page["first_id"] == page["last_id"] == batch["batch_id"]
    else:
        assert [edge["node"]["batch_id"] for edge in page["edges"]] == [batch["batch_id"]], page
        assert page["page_info"]["hasNextPage"] is False


def test_pydo_pages_and_cancels(client: Any, sandbox: SandboxServer) -> None:
    dialect = sandbox.sandbox.config.dialect
    done = create(client, upload(client, "small.jsonl", jsonl(prompts(1))), "pydo-done")
    sandbox.sandbox.clock.advance(5)
    running = create(client, upload(client, "large.jsonl", jsonl(prompts(5_000))), "pydo-running")
    sandbox.sandbox.clock.advance(1)  # through validating and queued, into in_progress

    first = client.inference.list_batches(limit=1, **PLAIN_HTTP)
    if dialect == "openapi":
        assert [b["batch_id"] for b in first["data"]] == [running["batch_id"]] and first["has_more"] is True
        cursor = first["last_id"]
        second = client.inference.list_batches(limit=1, after=cursor, **PLAIN_HTTP)
        assert [b["batch_id"] for b in second["data"]] == [done["batch_id"]] and second["has_more"] is False
    else:
        assert first["page_info"]["hasNextPage"] is True
        cursor = first["page_info"]["endCursor"]
        second = client.inference.list_batches(limit=1, after=cursor, **PLAIN_HTTP)
        assert [edge["node"]["batch_id"] for edge in second["edges"]] == [done["batch_id"]]
    assert client.inference.get_batch(running["batch_id"], **PLAIN_HTTP)["status"] == "in_progress"

    cancelled = client.inference.cancel_batch(running["batch_id"], **PLAIN_HTTP)
    check_batch(cancelled, dialect)
    assert cancelled["status"] == "cancelling", cancelled
    filtered = client.inference.list_batches(status="cancelling", **PLAIN_HTTP)
    listed = filtered["data"] if dialect == "openapi" else [edge["node"] for edge in filtered["edges"]]
    assert [b["batch_id"] for b in listed] == [running["batch_id"]]


def test_pydo_returns_declared_errors_as_bodies(client: Any, sandbox: SandboxServer) -> None:
    """pydo hands back declared error statuses as dicts: the body must carry the spec's ``id`` and ``message``."""
    done = create(client, upload(client, "small.jsonl", jsonl(prompts(1))), "pydo-errors")
    sandbox.sandbox.clock.advance(600)
    refused = client.inference.cancel_batch(done["batch_id"], **PLAIN_HTTP)  # terminal: 409 per spec
    assert refused.keys() >= ERROR_KEYS and refused["id"] == "conflict", refused
    missing = client.inference.get_batch("00000000-0000-0000-0000-000000000000", **PLAIN_HTTP)
    assert missing.keys() >= ERROR_KEYS and missing["id"] == "not_found", missing


def test_pydo_refuses_a_token_over_plain_http(client: Any) -> None:
    """Why every call above passes enforce_https=False: without it nothing leaves pydo."""
    with pytest.raises(ServiceRequestError, match="non-TLS"):
        client.inference.list_batches()
