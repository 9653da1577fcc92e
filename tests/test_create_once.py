"""The submit workflow's exactly-once rule on the emulators of the APIs without an idempotency key (the OpenAI
family, Anthropic): a lost create is looked for, patiently (a listing may lag), before anything is sent again; a
listing that cannot tell creates nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from batch_mcp.backends.base import Backend, RecoveryInconclusive
from batch_mcp.backends.openai_compat import OpenAICompatBackend
from batch_mcp.domain import CreateSpec, Job
from batch_mcp.sandbox import SandboxServer
from batch_mcp.services.once import SubmissionUnresolved, create_once

from test_backend_contract_support import Plan, creates, line_format, made_since, newest_seq, quiet_window

pytest_plugins = ["test_backend_contract_support"]


@pytest.fixture(autouse=True)
def _without_idempotency_key(backend: Backend) -> None:
    if backend.capabilities.idempotency == "request_id":
        pytest.skip("DigitalOcean replays request_id: its loop re-sends a lost create itself (contract suite)")


class LaggingListing:
    """The backend, except that its listing does not show a new job the first ``lag`` times it is asked."""

    def __init__(self, inner: OpenAICompatBackend, lag: int) -> None:
        self.inner, self.lag = inner, lag
        self.name, self.capabilities = inner.name, inner.capabilities

    async def create(self, spec: CreateSpec) -> Job:
        return await self.inner.create(spec)

    async def recover(self, spec: CreateSpec) -> Job | None:
        if self.lag:
            self.lag -= 1
            return None
        return await self.inner.recover(spec)


class Undecided(LaggingListing):
    async def recover(self, spec: CreateSpec) -> Job | None:
        raise RecoveryInconclusive("two batches on this file, neither with our token", candidates=("b_1", "b_2"))


@pytest.mark.parametrize("looks", [3, 1])
async def test_a_lagging_listing_is_asked_again_before_anything_is_created(
        emulator: SandboxServer, backend: OpenAICompatBackend, requests_file: Path, plan: Plan, looks: int) -> None:
    spec = plan((await backend.upload(requests_file, line_format(backend))).ref, planned_at=quiet_window(emulator))
    emulator.sandbox.faults.fail_next("create_batch", "lost_answer")
    before, seq = creates(emulator), newest_seq(emulator)
    job = await create_once(LaggingListing(backend, lag=1), spec, looks=looks, pause_s=0)  # type: ignore[arg-type]
    made = made_since(emulator, seq)
    if looks == 1:  # believing the first empty listing pays for the job twice: what the looks are for
        assert len(made) == 2 and creates(emulator) == before + 2
    else:
        assert made == [job.id] and creates(emulator) == before + 1


async def test_an_undecided_listing_creates_nothing_and_names_the_candidates(
        emulator: SandboxServer, backend: OpenAICompatBackend, requests_file: Path, plan: Plan) -> None:
    spec = plan((await backend.upload(requests_file, line_format(backend))).ref)
    emulator.sandbox.faults.fail_next("create_batch", "lost_answer")
    before = creates(emulator)
    with pytest.raises(SubmissionUnresolved) as caught:
        await create_once(Undecided(backend, lag=0), spec, pause_s=0)  # type: ignore[arg-type]
    assert creates(emulator) == before + 1
    assert caught.value.candidates == (f"{backend.name}:b_1", f"{backend.name}:b_2")
    assert "nothing more was created" in str(caught.value) and spec.client_token in str(caught.value)
