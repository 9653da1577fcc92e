"""The service checks, prices and splits a file by the rules of the backend it is asked for, and refuses (before
anything is uploaded) work for a backend that has no key here."""

from __future__ import annotations

from pathlib import Path

import pytest

from batch_mcp.backends.base import NotConfigured
from batch_mcp.backends.registry import CATALOG
from batch_mcp.sandbox import SandboxServer
from batch_mcp.server import open_app_state

from conftest import settings_for


async def test_validation_applies_the_named_backends_limits(sandbox: SandboxServer, workdir: Path) -> None:
    async with open_app_state(settings_for(sandbox, workdir)) as state:
        default = await state.service.validate("data/tickets.jsonl")
        groq = await state.service.validate("data/tickets.jsonl", backend="groq")
    assert default.backend is not None and default.backend.name == "digitalocean"
    assert groq.backend is not None and groq.backend.name == "groq"
    assert groq.backend.max_requests == CATALOG["groq"].capabilities.max_requests
    assert groq.backend.max_bytes == CATALOG["groq"].capabilities.max_bytes


async def test_a_limit_setting_overrides_every_backends_own(sandbox: SandboxServer, workdir: Path) -> None:
    async with open_app_state(settings_for(sandbox, workdir, max_requests=120)) as state:
        report = await state.service.validate("data/tickets.jsonl", backend="openai")
    assert report.backend is not None and report.backend.max_requests == 120 and report.batches == 3


async def test_the_estimate_uses_the_named_backends_prices(sandbox: SandboxServer, workdir: Path) -> None:
    async with open_app_state(settings_for(sandbox, workdir)) as state:
        default = await state.service.estimate_cost("data/tickets.jsonl")
        openai = await state.service.estimate_cost("data/tickets.jsonl", backend="openai")
    assert (default.backend, openai.backend) == ("digitalocean", "openai")
    assert openai.batch_discount == state.service.prices.of("openai").discount


async def test_work_for_a_backend_without_a_key_is_refused_before_any_upload(sandbox: SandboxServer,
                                                                               workdir: Path) -> None:
    before = sandbox.sandbox.stats()["files"]
    async with open_app_state(settings_for(sandbox, workdir)) as state:
        with pytest.raises(NotConfigured, match="OpenAI is not configured: set OPENAI_API_KEY"):
            await state.service.submit("data/tickets.jsonl", backend="openai")
        with pytest.raises(NotConfigured, match="no backend called 'nosuch'"):
            await state.service.validate("data/tickets.jsonl", backend="nosuch")
    assert sandbox.sandbox.stats()["files"] == before
