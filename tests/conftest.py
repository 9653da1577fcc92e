"""Shared fixtures: a fast sandbox on loopback, a workspace with example files, and an MCP client on our server."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from batch_mcp.config import Settings
from batch_mcp.demo import example_file
from batch_mcp.sandbox import SandboxConfig, SandboxServer
from batch_mcp.server import build_server, open_app_state
from batch_mcp.store import JobStore
from batch_mcp.tools.context import AppState


def fast_config(**overrides: Any) -> SandboxConfig:
    """A sandbox whose jobs finish in a fraction of a second, with a rate limit tests never reach."""
    values: dict[str, Any] = dict(validating_s=0.05, queued_s=0.05, requests_per_s=20_000, finalizing_s=0.05,
                                  cancelling_s=0.05, rate_limit_per_minute=1_000_000, failure_rate=0.05)
    values.update(overrides)
    return SandboxConfig(**values)


#: A PostgreSQL database the store tests may create schemas in (.ci/postgres starts one); unset: SQLite only,
#: unless BATCH_MCP_REQUIRE_POSTGRES=1 (CI), which makes its absence a failure.
POSTGRES_URL = os.environ.get("BATCH_MCP_TEST_POSTGRES_URL")


def postgres_url() -> str:
    if not POSTGRES_URL:
        if os.environ.get("BATCH_MCP_REQUIRE_POSTGRES") == "1":
            pytest.fail("BATCH_MCP_TEST_POSTGRES_URL is unset; start a server with .ci/postgres")
        pytest.skip("no PostgreSQL: export BATCH_MCP_TEST_POSTGRES_URL=\"$(.ci/postgres)\" to run these on it too")
    return POSTGRES_URL


@contextmanager
def postgres_schema() -> Iterator[str]:
    """A fresh schema in the test database, dropped afterwards: the URL of a store in it."""
    import psycopg

    base, name = postgres_url(), f"test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    try:
        yield f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{name}"
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {name} CASCADE")


OpenStore = Callable[..., JobStore]


@pytest.fixture(params=["sqlite", "postgresql"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OpenStore]:
    """Opens job stores on one fresh database (SQLite in a folder, or a PostgreSQL schema): each call is
    another process's (or a restarted server's) store on the same data. Every store opened is closed after."""
    with ExitStack() as stack:
        if request.param == "sqlite":
            def opened(**options: Any) -> JobStore:
                return stack.enter_context(JobStore.open(tmp_path / "store", **options))
        else:
            from batch_mcp.store.postgres import PostgresDatabase

            url = stack.enter_context(postgres_schema())

            def opened(**options: Any) -> JobStore:
                return stack.enter_context(JobStore.open(database=PostgresDatabase(url), **options))
        yield opened


@pytest.fixture
def store(open_store: OpenStore) -> JobStore:
    """A fresh, empty job store, on SQLite and on PostgreSQL."""
    return open_store()


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(fast_config()) as server:
        yield server


@pytest.fixture(scope="module")
def faulty_server() -> Iterator[SandboxServer]:
    """A module's own sandbox for fault injection, apart from ``sandbox``."""
    with SandboxServer(fast_config()) as server:
        yield server


@pytest.fixture
def faulty(faulty_server: SandboxServer) -> Iterator[SandboxServer]:
    """That sandbox, with no fault left armed before or after the test."""
    faulty_server.sandbox.faults.reset()
    yield faulty_server
    faulty_server.sandbox.faults.reset()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """An allowed folder holding the bundled examples under data/."""
    data = tmp_path / "work" / "data"
    data.mkdir(parents=True)
    for name in ("tickets.jsonl", "reviews-anthropic.jsonl"):
        shutil.copyfile(example_file(name), data / name)
    return tmp_path / "work"


@pytest.fixture
def groq_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """Groq configured beside DigitalOcean (and no other backend); its address is never called."""
    for name in ("OPENAI_API_KEY", "DEEPINFRA_TOKEN", "DEEPINFRA_API_KEY", "BATCH_MCP_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GROQ_API_KEY", "gsk-test-key-not-real")
    monkeypatch.setenv("GROQ_BASE_URL", "http://127.0.0.1:9/openai/v1")


#: The three OpenAI-family backends, configured beside DigitalOcean at an address never called: with them the
#: tools take every shape the backends give them (a backend choice, more endpoints, longer windows).
OTHER_BACKENDS = {"OPENAI_API_KEY": "sk-test-key-not-real", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
                  "DEEPINFRA_TOKEN": "di-test-key-not-real", "DEEPINFRA_BASE_URL": "http://127.0.0.1:9/v1/openai",
                  "GROQ_API_KEY": "gsk-test-key-not-real", "GROQ_BASE_URL": "http://127.0.0.1:9/openai/v1"}


def only_digitalocean(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*OTHER_BACKENDS, "DEEPINFRA_API_KEY", "BATCH_MCP_BACKEND"):
        monkeypatch.delenv(name, raising=False)


def settings_for(sandbox: SandboxServer, workdir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = dict(token=sandbox.token, base_url=sandbox.base_url, allowed_dirs=[workdir],
                                  state_dir=workdir.parent / "state", poll_interval_s=0.05)
    values.update(overrides)
    return Settings(**values)


@asynccontextmanager
async def mcp_session(settings: Settings, mode: str = "auto", **client_kwargs: Any
                      ) -> AsyncIterator[tuple[Client, AppState]]:
    """Our server, in memory, behind the SDK's real Client (opened inside the test, as the SDK advises)."""
    async with open_app_state(settings) as state, Client(build_server(state), mode=mode, **client_kwargs) as client:
        yield client, state
