"""One job per submission on every backend, whatever happens to the create (fixtures in
``test_backend_contract_support``).

Where exactly-once works differently the tests say so. With DigitalOcean's ``request_id`` a resend is
safe and ``recover`` is that resend. Without a key the create is sent once and a lost answer is found by
listing back to the planned time: by our token in the metadata (the OpenAI family), or, where the API
keeps no metadata (Anthropic), by the request count, and two batches of that count are reported as
candidates rather than guessed between.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from batch_mcp.backends.base import Backend, CreateNotConfirmed, RecoveryInconclusive
from batch_mcp.backends.openai_compat import VARIANTS, OpenAICompatBackend
from batch_mcp.domain import JobPage, JobStatus
from batch_mcp.sandbox import SandboxServer
from batch_mcp.services.once import SubmissionUnresolved

from test_backend_contract_support import (
    FAST,
    Plan,
    create_once,
    creates,
    keyless,
    line_format,
    lists,
    made_since,
    newest_seq,
    quiet_window,
    tagged,
    write_requests,
)

pytest_plugins = ["test_backend_contract_support"]


async def staged(backend: Backend, path: Path) -> str:
    return (await backend.upload(path, line_format(backend))).ref


async def test_a_lost_create_answer_is_recovered_as_the_same_job(emulator: SandboxServer, backend: Backend,
                                                                 requests_file: Path, plan: Plan) -> None:
    """Without a key the create is sent once; with DO's request_id the loop resends it until it gives up.
    Either way the job exists once, and ``recover`` finds it."""
    spec = plan(await staged(backend, requests_file), planned_at=quiet_window(emulator))
    sends = 1 if keyless(backend) else FAST.retry.max_attempts
    emulator.sandbox.faults.fail_next("create_batch", "lost_answer", times=sends)
    before, seq = creates(emulator), newest_seq(emulator)
    with pytest.raises(CreateNotConfirmed) as caught:
        await backend.create(spec)
    assert caught.value.client_token == spec.client_token
    assert creates(emulator) == before + sends
    made = made_since(emulator, seq)
    assert len(made) == 1
    found = await backend.recover(spec)
    assert found is not None and found.id == made[0]
    assert found.client_token == (spec.client_token if tagged(backend) or not keyless(backend) else None)


@pytest.mark.parametrize(("kind", "sent"), [("lost_answer", 1), ("server_error", 2), ("drop", 2)])
async def test_one_job_per_submission_whatever_happens_to_the_create(emulator: SandboxServer, backend: Backend,
                                                                     requests_file: Path, plan: Plan, kind: str,
                                                                     sent: int) -> None:
    """A 500 or a drop before the service acted, or a lost answer after it did:
    create -> recover -> (create only if nothing was found) makes exactly one job. With a request_id
    every fault is simply resent once, and the resend answers with the one job."""
    spec = plan(await staged(backend, requests_file), planned_at=quiet_window(emulator))
    emulator.sandbox.faults.fail_next("create_batch", kind)  # type: ignore[arg-type]
    before, seq = creates(emulator), newest_seq(emulator)
    job = await create_once(backend, spec)
    assert creates(emulator) == before + (sent if keyless(backend) else 2)
    assert made_since(emulator, seq) == [job.id]
    recovered = await backend.recover(spec)
    assert recovered is not None and recovered.id == job.id


@pytest.mark.parametrize("kind", ["server_error", "drop"])
async def test_a_create_answered_5xx_or_cut_off_is_not_sent_again(emulator: SandboxServer, backend: Backend,
                                                                  requests_file: Path, plan: Plan, kind: str) -> None:
    if not keyless(backend):
        pytest.skip(f"{backend.capabilities.label} replays its request_id: a resend is safe")
    spec = plan(await staged(backend, requests_file), planned_at=quiet_window(emulator))
    emulator.sandbox.faults.fail_next("create_batch", kind)  # type: ignore[arg-type]
    before = creates(emulator)
    with pytest.raises(CreateNotConfirmed, match="may or may not exist"):
        await backend.create(spec)
    assert creates(emulator) == before + 1
    assert await backend.recover(spec) is None  # it did not take effect: now creating again is safe


async def test_a_create_refused_with_429_is_sent_again(emulator: SandboxServer, backend: Backend,
                                                       requests_file: Path, plan: Plan) -> None:
    spec = plan(await staged(backend, requests_file))
    emulator.sandbox.faults.fail_next("create_batch", "rate_limit", times=2, retry_after_s=0)
    before, seq = creates(emulator), newest_seq(emulator)
    job = await backend.create(spec)
    assert creates(emulator) == before + 3
    assert made_since(emulator, seq) == [job.id]


async def test_recover_pages_back_to_the_planned_time_and_no_further(emulator: SandboxServer, backend: Backend,
                                                                     requests_file: Path, tmp_path: Path, plan: Plan,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    if not keyless(backend):
        pytest.skip(f"{backend.capabilities.label} replays its request_id: recover is a resend")
    monkeypatch.setattr(sys.modules[type(backend).__module__], "LIST_PAGE_MAX", 2)
    target = plan(await staged(backend, requests_file), planned_at=quiet_window(emulator))
    seq = newest_seq(emulator)
    emulator.sandbox.faults.fail_next("create_batch", "lost_answer")
    with pytest.raises(CreateNotConfirmed):
        await backend.create(target)
    other = await staged(backend, write_requests(tmp_path / "other.jsonl", line_format(backend), count=3))
    for _ in range(5):  # newer batches (of another file, another size) push ours to the third page
        emulator.sandbox.clock.advance(1)
        await backend.create(plan(other))
    before = lists(emulator)
    found = await backend.recover(target)
    assert found is not None and found.id == made_since(emulator, seq)[0]
    # a token ends the walk where it is found; a request count is known to be unique only past the window
    assert lists(emulator) - before == (3 if tagged(backend) else 4)

    before = lists(emulator)
    assert await backend.recover(plan(other, planned_at=target.planned_at + timedelta(days=1))) is None
    assert lists(emulator) - before == 1


class MetadataDroppingGateway(OpenAICompatBackend):
    """A compatible gateway that loses batch metadata: our token never comes back."""

    async def list(self, status: JobStatus | None = None, limit: int = 20, cursor: str | None = None) -> JobPage:
        page = await super().list(status, limit, cursor)
        return page.model_copy(update={"jobs": [job.model_copy(update={"client_token": None}) for job in page.jobs]})


async def test_without_metadata_one_matching_batch_is_ours_and_several_are_reported(
        emulator: SandboxServer, backend: Backend, requests_file: Path, tmp_path: Path, plan: Plan) -> None:
    """Anthropic keeps no metadata at all; an OpenAI-style gateway may drop it. One batch on the same input
    (same file id, or same request count) since the planned time is ours; two are candidates, and the
    submit workflow then names them and creates nothing."""
    if not keyless(backend):
        pytest.skip(f"{backend.capabilities.label} replays its request_id: nothing is matched")
    untagged = (MetadataDroppingGateway(VARIANTS[backend.name], api_key=emulator.token, base_url=emulator.base_url,
                                        options=FAST) if tagged(backend) else backend)
    try:
        ref = await staged(backend, requests_file)
        spec = plan(ref, planned_at=quiet_window(emulator))
        seq = newest_seq(emulator)
        emulator.sandbox.faults.fail_next("create_batch", "lost_answer")
        with pytest.raises(CreateNotConfirmed):
            await untagged.create(spec)
        found = await untagged.recover(spec)
        assert found is not None and [found.id] == made_since(emulator, seq)
        other = await backend.create(plan(ref))
        with pytest.raises(RecoveryInconclusive) as caught:
            await untagged.recover(spec)
        assert set(caught.value.candidates) == {found.id, other.id}
        smaller = await staged(backend, write_requests(tmp_path / "smaller.jsonl", line_format(backend), count=3))
        assert await untagged.recover(plan(smaller, planned_at=spec.planned_at)) is None

        emulator.sandbox.faults.fail_next("create_batch", "lost_answer")
        before = creates(emulator)
        with pytest.raises(SubmissionUnresolved) as unresolved:
            await create_once(untagged, plan(ref, planned_at=spec.planned_at))
        assert creates(emulator) == before + 1  # the lost one; nothing after it
        assert {f"{backend.name}:{job_id}" for job_id in (found.id, other.id)} <= set(unresolved.value.candidates)
    finally:
        if untagged is not backend:
            await untagged.aclose()


async def test_recover_ignores_batches_of_other_submissions(emulator: SandboxServer, backend: Backend,
                                                            requests_file: Path, plan: Plan) -> None:
    """The service keeps metadata, so a batch on the same file with another token is someone else's."""
    if not tagged(backend):
        pytest.skip(f"{backend.capabilities.label} keeps no token of ours: this is about telling tokens apart")
    ref = await staged(backend, requests_file)
    await backend.create(plan(ref))
    assert await backend.recover(plan(ref, planned_at=datetime.now(UTC) - timedelta(minutes=1))) is None
