"""Fixtures and helpers of the backend contract suite: one emulator per backend variant, and what differs.

Test modules load it with ``pytest_plugins = ["test_backend_contract_support"]``. The variants are the
OpenAI family (OpenAI, DeepInfra, Groq), DigitalOcean in both its wire dialects, and Anthropic. Where they differ the
helpers read the backend's capabilities (its line format, whether it keeps metadata, how a lost create
is found) rather than its name. Each emulator runs on a frozen clock the tests advance.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from batch_mcp.backends.anthropic import AnthropicBackend
from batch_mcp.backends.base import TOKEN_METADATA_KEY, Backend
from batch_mcp.backends.digitalocean import DigitalOceanBackend
from batch_mcp.backends.http import HttpOptions
from batch_mcp.backends.openai_compat import VARIANTS, OpenAICompatBackend
from batch_mcp.backends.recovery import CLOCK_SKEW
from batch_mcp.backends.retries import RetryPolicy
from batch_mcp.domain import CreateSpec, Job, JobStatus
from batch_mcp.sandbox import SandboxConfig, SandboxServer
from batch_mcp.services import once

CHAT = "/v1/chat/completions"
FAST = HttpOptions(retry=RetryPolicy(max_attempts=3, base_delay_s=0.01, max_delay_s=0.05), timeout_s=30.0)
DIALECTS = ("openapi", "godo")
#: The request the test files always fail (the sandbox's marker), among six.
FAILING = 2

Plan = Callable[..., CreateSpec]


@pytest.fixture(scope="module", params=[*VARIANTS, *(f"digitalocean-{dialect}" for dialect in DIALECTS), "anthropic"])
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
    if name == "anthropic":
        return AnthropicBackend(api_key=api_key, base_url=emulator.base_url, options=FAST)
    return OpenAICompatBackend(VARIANTS[name], api_key=api_key, base_url=emulator.base_url, options=FAST)


@pytest.fixture
async def backend(emulator: SandboxServer) -> AsyncIterator[Backend]:
    emulator.sandbox.faults.reset()
    opened = open_backend(emulator, emulator.token)
    yield opened
    await opened.aclose()


def line_format(backend: Backend) -> str:
    return backend.capabilities.line_formats[0]


def godo(emulator: SandboxServer) -> bool:
    """godo's shape carries no metadata, endpoint or job errors."""
    return emulator.sandbox.config.backend == "digitalocean" and emulator.sandbox.config.dialect == "godo"


def inline(backend: Backend) -> bool:
    """Anthropic: nothing is uploaded, the requests travel in the create body and are checked right there."""
    return backend.capabilities.upload == "inline"


def keyless(backend: Backend) -> bool:
    """No idempotency key: a create is sent once, and a lost answer is found by listing."""
    return backend.capabilities.idempotency != "request_id"


def tagged(backend: Backend) -> bool:
    """Our token rides in the job's metadata, and comes back with it."""
    return backend.capabilities.idempotency == "metadata_tag"


def first_status(backend: Backend) -> JobStatus:
    """Where a new job starts: checked asynchronously (validating), or checked at create (Anthropic)."""
    return JobStatus.IN_PROGRESS if inline(backend) else JobStatus.VALIDATING


async def past_validation(emulator: SandboxServer, backend: Backend, job_id: str) -> None:
    """DigitalOcean refuses a cancel before the job reached its provider; the others take one any time."""
    if backend.name == "digitalocean":
        while (await backend.get(job_id)).status is JobStatus.VALIDATING:
            emulator.sandbox.clock.advance(0.5)


def write_requests(path: Path, fmt: str, count: int = 6) -> Path:
    """``count`` chat requests in ``fmt`` lines, the one at FAILING marked to fail."""
    lines = []
    for i in range(count):
        message = {"role": "user", "content": f"ticket {i}" + (" [[fail]]" if i == FAILING else "")}
        if fmt == "anthropic":
            lines.append({"custom_id": f"r{i}", "params": {"model": "m-1", "max_tokens": 16, "messages": [message]}})
        else:
            lines.append({"custom_id": f"r{i}", "method": "POST", "url": CHAT,
                          "body": {"model": "m-1", "messages": [message]}})
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


@pytest.fixture
def requests_file(emulator: SandboxServer, backend: Backend, tmp_path: Path) -> Path:
    return write_requests(tmp_path / "requests.jsonl", line_format(backend))


@pytest.fixture
def plan(backend: Backend) -> Plan:
    """``plan(input_ref, **overrides)``: a create spec in the backend's own line format."""
    fmt = line_format(backend)

    def planned(input_ref: str, **overrides: Any) -> CreateSpec:
        values: dict[str, Any] = dict(input_ref=input_ref, line_format=fmt, endpoint=CHAT if fmt == "openai" else None,
                                      client_token=f"tok_{uuid.uuid4().hex}", planned_at=datetime.now(UTC))
        values.update(overrides)
        return CreateSpec(**values)

    return planned


def quiet_window(server: SandboxServer) -> datetime:
    """Move the emulator's clock past every earlier job's recovery window and return its now as a planned time.

    Without metadata a lost create is matched by its request count, so other tests' jobs of the same
    size must lie before the window.
    """
    server.sandbox.clock.advance(2 * CLOCK_SKEW.total_seconds())
    return datetime.fromtimestamp(server.sandbox.clock.now(), UTC)


def creates(server: SandboxServer) -> int:
    return sum(record.operation == "create_batch" for record in server.sandbox.requests)


def lists(server: SandboxServer) -> int:
    return sum(record.operation == "list_batches" for record in server.sandbox.requests)


def newest_seq(server: SandboxServer) -> int:
    """Where ``made_since`` counts from."""
    return max((job.seq for job in server.sandbox.jobs.values()), default=-1)


def made_since(server: SandboxServer, seq: int) -> list[str]:
    """The emulator's jobs created after ``seq``, oldest first: what a submission actually made."""
    return [job.batch_id for job in sorted(server.sandbox.jobs.values(), key=lambda job: job.seq) if job.seq > seq]


def jobs_with(server: SandboxServer, token: str) -> list[str]:
    """The emulator's jobs carrying our submission token (as DO's request_id, or in the metadata)."""
    return [job.batch_id for job in server.sandbox.jobs.values()
            if getattr(job.request, "request_id", None) == token
            or (getattr(job.request, "metadata", None) or {}).get(TOKEN_METADATA_KEY) == token]


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
