"""Helpers for the sandbox tests: a raw-HTTP driver, JSONL builders and the OpenAPI contract check.

Test modules load it with ``pytest_plugins = ["test_sandbox_support"]`` to get its fixtures.

Every response the driver receives is checked on arrival: ``ratelimit-*`` headers are integers, and
in the openapi dialect the status and body must match the OpenAPI extract (see :class:`Contract`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from functools import cache
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml
from openapi_schema_validator import OAS30Validator

from batch_mcp.sandbox import SandboxConfig, SandboxServer
from batch_mcp.sandbox.state import Sandbox

SPEC_PATH = Path(__file__).resolve().parents[2] / "shared" / "reference" / "do-batch-inference.openapi.yaml"
CHAT, RESPONSES = "/v1/chat/completions", "/v1/responses"
#: A pace that finishes small jobs in about a second of (real or advanced) time.
FAST: dict[str, Any] = dict(
    validating_s=0.2, queued_s=0.2, requests_per_s=1000, finalizing_s=0.2, cancelling_s=0.2, failure_rate=0.0
)

#: Operation name -> (spec path, method). ``download`` is not in the spec (results URLs are opaque).
SPEC_OPERATIONS = {
    "create_file": ("/v1/batches/files", "post"),
    "upload": ("/<upload_url>", "put"),
    "create_batch": ("/v1/batches", "post"),
    "list_batches": ("/v1/batches", "get"),
    "get_batch": ("/v1/batches/{batch_id}", "get"),
    "cancel_batch": ("/v1/batches/{batch_id}/cancel", "post"),
    "get_results": ("/v1/batches/{batch_id}/results", "get"),
}
_ROUTES = [
    ("POST", re.compile(r"/v1/batches/files"), "create_file"),
    ("POST", re.compile(r"/v1/batches"), "create_batch"),
    ("GET", re.compile(r"/v1/batches"), "list_batches"),
    ("GET", re.compile(r"/v1/batches/[^/]+"), "get_batch"),
    ("POST", re.compile(r"/v1/batches/[^/]+/cancel"), "cancel_batch"),
    ("GET", re.compile(r"/v1/batches/[^/]+/results"), "get_results"),
    ("PUT", re.compile(r"/storage/uploads/.+"), "upload"),
    ("GET", re.compile(r"/storage/results/.+"), "download"),
]


def operation_of(request: httpx2.Request) -> str:
    for method, pattern, name in _ROUTES:
        if request.method == method and pattern.fullmatch(request.url.path):
            return name
    return "other"


# --- JSONL builders --------------------------------------------------------------------------------


def chat_line(custom_id: str, prompt: str, url: str = CHAT) -> dict[str, Any]:
    if url == RESPONSES:
        return {
            "custom_id": custom_id,
            "method": "POST",
            "url": url,
            "body": {"model": "gpt-4.1-mini", "input": prompt},
        }
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": url,
        "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]},
    }


def anthropic_line(custom_id: str, prompt: str) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "params": {
            "model": "claude-3-5-haiku-latest",
            "max_tokens": 64,
            "messages": [{"role": "user", "content": [{"type": "text", "text": prompt}]}],
        },
    }


def jsonl(lines: list[Any]) -> bytes:
    return "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines).encode()


def prompts(count: int) -> list[dict[str, Any]]:
    return [
        chat_line(f"req-{i}", f"Summarize ticket {i}: the printer on floor {i} keeps jamming today")
        for i in range(count)
    ]


# --- the OpenAPI contract --------------------------------------------------------------------------


class Contract:
    """Checks a response against the operation's declared response for its status (or ``default``)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self._validators: dict[str, OAS30Validator] = {}

    def declared(self, operation: str, status: str) -> dict[str, Any] | None:
        """The response the spec declares for exactly this status (or ``default``), ``$ref`` resolved."""
        path, method = SPEC_OPERATIONS[operation]
        response = self.spec["paths"][path][method]["responses"].get(status)
        if response is not None and "$ref" in response:
            response = self.spec["components"]["responses"][response["$ref"].rsplit("/", 1)[-1]]
        return response

    def _validator(self, ref: str) -> OAS30Validator:
        """A validator for one component schema; the spec's components ride along to resolve ``$ref``s."""
        if ref not in self._validators:
            schema = {"$ref": ref, "components": self.spec["components"]}
            self._validators[ref] = OAS30Validator(schema, format_checker=OAS30Validator.FORMAT_CHECKER)
        return self._validators[ref]

    def check(self, operation: str, response: httpx2.Response) -> None:
        if operation not in SPEC_OPERATIONS:
            return
        declared = self.declared(operation, str(response.status_code)) or self.declared(operation, "default")
        assert (
            declared is not None
        ), f"{operation} answered {response.status_code}, which the spec does not declare"
        for header in declared.get("headers", {}):
            assert response.headers.get(
                header, ""
            ).isdigit(), f"{operation}: header {header} missing or not an integer"
        content = declared.get("content")
        if content is None:
            return
        ref = content["application/json"]["schema"]["$ref"]
        errors = [error.message for error in self._validator(ref).iter_errors(response.json())]
        assert not errors, f"{operation} {response.status_code} breaks {ref}: {errors}"


@cache
def contract() -> Contract:
    if not SPEC_PATH.exists():
        pytest.skip(f"the OpenAPI extract is not at {SPEC_PATH}")
    return Contract(yaml.safe_load(SPEC_PATH.read_text()))


# --- the driver ------------------------------------------------------------------------------------


class Driver:
    """Raw HTTP against one running sandbox: an authenticated API client and a bare storage client."""

    def __init__(self, server: SandboxServer, dialect: str) -> None:
        self.server = server
        self.state: Sandbox = server.sandbox
        self.contract = contract() if dialect == "openapi" else None
        #: (operation, status) of every response received, in order.
        self.seen: list[tuple[str, int]] = []
        hooks = {"response": [self._observe]}
        self.api = httpx2.Client(
            base_url=server.base_url,
            headers={"Authorization": f"Bearer {server.token}"},
            event_hooks=hooks,
            timeout=60,
        )
        self.storage = httpx2.Client(event_hooks=hooks, timeout=60)

    def _observe(self, response: httpx2.Response) -> None:
        response.read()
        operation = operation_of(response.request)
        for header in ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"):
            assert response.headers.get(
                header, ""
            ).isdigit(), f"{response.request.url.path}: {header} missing"
        if self.contract is not None:
            self.contract.check(operation, response)
        self.seen.append((operation, response.status_code))

    def close(self) -> None:
        self.api.close()
        self.storage.close()

    def advance(self, seconds: float) -> None:
        """Move the sandbox clock instead of sleeping."""
        self.state.clock.advance(seconds)

    def create_file(self, name: str = "input.jsonl") -> dict[str, Any]:
        response = self.api.post("/v1/batches/files", json={"file_name": name})
        assert response.status_code == 201, response.text
        return response.json()

    def upload_file(self, content: bytes) -> str:
        intent = self.create_file()
        response = self.storage.put(intent["upload_url"], content=content)
        assert response.status_code == 200, response.text
        return intent["file_id"]

    def create_batch(
        self,
        file_id: str,
        provider: str = "openai",
        endpoint: str | None = CHAT,
        request_id: str | None = None,
        **extra: Any,
    ) -> httpx2.Response:
        body = {
            "file_id": file_id,
            "provider": provider,
            "completion_window": "24h",
            "request_id": request_id or f"req-{file_id}",
            **extra,
        }
        if endpoint is not None:
            body["endpoint"] = endpoint
        return self.api.post("/v1/batches", json=body)

    def submit(
        self, lines: list[Any], provider: str = "openai", endpoint: str | None = CHAT, **extra: Any
    ) -> str:
        response = self.create_batch(
            self.upload_file(jsonl(lines)), provider, None if provider == "anthropic" else endpoint, **extra
        )
        assert response.status_code == 201, response.text
        return response.json()["batch_id"]

    def batch(self, batch_id: str) -> dict[str, Any]:
        response = self.api.get(f"/v1/batches/{batch_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def finish(self, batch_id: str, seconds: float = 600) -> dict[str, Any]:
        self.advance(seconds)
        return self.batch(batch_id)

    def results(self, batch_id: str) -> dict[str, Any]:
        response = self.api.get(f"/v1/batches/{batch_id}/results")
        assert response.status_code == 200, response.text
        return response.json()

    def download(self, url: str | None) -> list[dict[str, Any]]:
        assert url is not None
        response = self.storage.get(url)
        assert response.status_code == 200, response.text
        return [json.loads(line) for line in response.text.splitlines()]


def one_call_per_operation(driver: Driver) -> dict[str, Callable[[], httpx2.Response]]:
    """A repeatable call of each operation that answers 2xx when no fault is armed.

    Cancelling stays repeatable only while the job is ``cancelling``: use a long ``cancelling_s``.
    """
    done = driver.submit(prompts(2))
    running = driver.submit(prompts(5_000))
    driver.advance(1)  # done is finished, running is in progress
    links = driver.results(done)
    file_id = driver.upload_file(jsonl(prompts(1)))
    content = jsonl(prompts(3))
    return {
        "create_file": lambda: driver.api.post("/v1/batches/files", json={"file_name": "f.jsonl"}),
        "upload": lambda: driver.storage.put(driver.create_file()["upload_url"], content=content),
        "create_batch": lambda: driver.create_batch(file_id, request_id="same"),
        "list_batches": lambda: driver.api.get("/v1/batches"),
        "get_batch": lambda: driver.api.get(f"/v1/batches/{done}"),
        "cancel_batch": lambda: driver.api.post(f"/v1/batches/{running}/cancel"),
        "get_results": lambda: driver.api.get(f"/v1/batches/{done}/results"),
        "download": lambda: driver.storage.get(links["output_file_url"]),
    }


@pytest.fixture
def start_sandbox() -> Iterator[Callable[..., Driver]]:
    """Start sandboxes with the fast pace plus overrides; all are stopped after the test."""
    with ExitStack() as stack:

        def start(**overrides: Any) -> Driver:
            config = SandboxConfig(**{**FAST, **overrides})
            driver = Driver(stack.enter_context(SandboxServer(config)), config.dialect)
            stack.callback(driver.close)
            return driver

        yield start


@pytest.fixture
def driver(start_sandbox: Callable[..., Driver]) -> Driver:
    """A fast openapi-dialect sandbox."""
    return start_sandbox()
