"""What only the Anthropic backend does: the streamed inline body, ``ended`` refined into our statuses,
``results_url`` held to the API's own host, delete, and recovery when the input can no longer be counted.

The shared behaviour (round trip, faults, exactly once) is in the contract suite; these run against the
emulator over loopback where a network is involved, and without one where it is not.
"""

from __future__ import annotations

import dataclasses
import io
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx2
import pytest

from batch_mcp.backends.anthropic import CAPABILITIES, AnthropicBackend
from batch_mcp.backends.anthropic import body as inline_body
from batch_mcp.backends.anthropic.body import PIECE_BYTES, InlineBody
from batch_mcp.backends.anthropic.wire import WireBatch, rate_limit_reset_s, to_job
from batch_mcp.backends.base import (
    AuthenticationError,
    BackendError,
    ConflictError,
    CreateNotConfirmed,
    InvalidRequestError,
    NotFoundError,
    RecoveryInconclusive,
    UnexpectedResponse,
)
from batch_mcp.backends.http import HttpOptions
from batch_mcp.backends.recovery import CLOCK_SKEW, MEASURED_SKEW, planned_on_service_clock, service_offset
from batch_mcp.backends.retries import RetryPolicy
from batch_mcp.domain import Counts, CreateSpec, JobStatus, ResultSource
from batch_mcp.sandbox import SandboxConfig, SandboxServer
from batch_mcp.schemas.jobs import BatchView
from batch_mcp.services.once import create_once

FAST = HttpOptions(retry=RetryPolicy(max_attempts=3, base_delay_s=0.01, max_delay_s=0.05), timeout_s=30.0)


def line(custom_id: str, text: str = "hello") -> dict[str, Any]:
    return {"custom_id": custom_id,
            "params": {"model": "m-1", "max_tokens": 8, "messages": [{"role": "user", "content": text}]}}


def write(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(item) + "\n" for item in lines))
    return path


def spec(path: Path, **overrides: Any) -> CreateSpec:
    values: dict[str, Any] = dict(input_ref=str(path), line_format="anthropic", client_token=uuid.uuid4().hex,
                                  planned_at=datetime.now(UTC))
    return CreateSpec(**{**values, **overrides})


@pytest.fixture(scope="module")
def emulator() -> Iterator[SandboxServer]:
    config = SandboxConfig(backend="anthropic", queued_s=1, requests_per_s=10, finalizing_s=1, cancelling_s=1,
                           failure_rate=0.0, rate_limit_per_minute=1_000_000)
    with SandboxServer(config) as server:
        server.sandbox.clock.freeze()
        yield server


@pytest.fixture
async def backend(emulator: SandboxServer) -> AsyncIterator[AnthropicBackend]:
    emulator.sandbox.faults.reset()
    emulator.sandbox.config.public_base_url = emulator.origin
    opened = AnthropicBackend(api_key=emulator.token, base_url=emulator.base_url, options=FAST)
    yield opened
    await opened.aclose()


def operations(server: SandboxServer, name: str) -> int:
    return sum(record.operation == name for record in server.sandbox.requests)


# --- the body, without a network ----------------------------------------------------------------------


async def test_the_body_is_the_files_requests_joined_in_bounded_pieces(tmp_path: Path) -> None:
    """Blank lines and CRLF endings are no requests; the pieces stay near PIECE_BYTES whatever the file's size."""
    lines = [line(f"r{i}", "x" * 2000) for i in range(3000)]  # ~6 MB
    path = tmp_path / "big.jsonl"
    path.write_bytes(b"\r\n".join(json.dumps(item).encode() for item in lines) + b"\r\n\n  \n")
    body = InlineBody.scan(path)
    pieces = [piece async for piece in body.stream()]
    assert body.requests == 3000 and sum(map(len, pieces)) == body.length
    assert json.loads(b"".join(pieces)) == {"requests": lines}
    assert len(pieces) > 5 and max(map(len, pieces)) < PIECE_BYTES + 3000


async def test_a_file_that_changed_after_the_count_is_never_sent_as_it_now_is(tmp_path: Path) -> None:
    path = write(tmp_path / "in.jsonl", [line("a"), line("b")])
    body = InlineBody.scan(path)
    write(path, [line("a"), line("b"), line("c")])
    with pytest.raises(BackendError, match="changed while its requests were being sent") as caught:
        _ = [piece async for piece in body.stream()]
    assert caught.value.code == "input_changed"


# --- statuses and counts ------------------------------------------------------------------------------


def batch(status: str, *, cancel: bool = False, **counts: int) -> WireBatch:
    return WireBatch.model_validate({
        "id": "msgbatch_1", "type": "message_batch", "processing_status": status,
        "request_counts": {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0, **counts},
        "created_at": "2026-12-01T10:00:00.123456Z", "expires_at": "2026-12-02T10:00:00Z",
        "cancel_initiated_at": "2026-12-01T10:05:00Z" if cancel else None,
        "results_url": f"{CAPABILITIES.default_base_url}/v1/messages/batches/msgbatch_1/results"
        if status == "ended" else None,
    })


@pytest.mark.parametrize(("wire", "status"), [
    (batch("in_progress", processing=5), JobStatus.IN_PROGRESS),
    (batch("canceling", cancel=True, processing=5), JobStatus.CANCELLING),
    (batch("ended", succeeded=4, errored=1), JobStatus.COMPLETED),  # errored requests fail no batch
    (batch("ended", cancel=True, succeeded=2, canceled=3), JobStatus.CANCELLED),
    (batch("ended", cancel=True, succeeded=5), JobStatus.CANCELLED),  # a cancel that came too late still counts
    (batch("ended", succeeded=3, expired=2), JobStatus.EXPIRED),
    (batch("paused", processing=5), JobStatus.IN_PROGRESS),  # unknown: keep polling
])
def test_ended_is_refined_and_the_raw_status_kept(wire: WireBatch, status: JobStatus) -> None:
    job = to_job(wire, "anthropic")
    assert (job.status, job.raw_status) == (status, wire.processing_status)
    assert job.results_ready is (wire.processing_status == "ended")
    assert job.cancel_requested_at is not None if wire.cancel_initiated_at else job.cancel_requested_at is None


def test_the_five_counts_map_without_loss() -> None:
    job = to_job(batch("ended", cancel=True, succeeded=4, errored=3, canceled=2, expired=1), "anthropic")
    assert job.counts == Counts(total=10, succeeded=4, failed=3, cancelled=2, expired=1, processing=0)
    running = to_job(batch("in_progress", processing=7), "anthropic")
    assert running.counts == Counts(total=7, processing=7)


@pytest.mark.parametrize(("wire", "shown", "percent"), [
    (batch("in_progress", processing=7), (0, 0, 0, 0, 7), 0.0),  # nothing settled yet: no progress is claimed
    (batch("in_progress", processing=6, succeeded=3, errored=1), (3, 1, 0, 0, 6), 40.0),
    (batch("ended", cancel=True, succeeded=2, errored=1, canceled=7), (2, 1, 7, 0, 0), 100.0),
    (batch("ended", succeeded=3, expired=2), (3, 0, 0, 2, 0), 100.0),
])
def test_the_view_shows_all_five_counts_and_only_reported_progress(wire: WireBatch, shown: tuple[int, ...],
                                                                   percent: float) -> None:
    view = BatchView.from_job(to_job(wire, "anthropic"))
    assert (view.completed, view.failed, view.cancelled, view.expired, view.processing) == shown
    assert view.total == sum(shown) and view.percent_done == percent


def test_the_spent_budget_decides_when_to_come_back() -> None:
    now = datetime.now(UTC)

    def response(**headers: str) -> httpx2.Response:
        named = {f"anthropic-ratelimit-{key.replace('_', '-')}": value for key, value in headers.items()}
        return httpx2.Response(429, headers=named)

    soon, later = (now + timedelta(seconds=5)).isoformat(), (now + timedelta(seconds=40)).isoformat()
    spent_requests = response(requests_remaining="0", requests_reset=soon, tokens_remaining="900", tokens_reset=later)
    assert rate_limit_reset_s(spent_requests) == pytest.approx(5, abs=1)
    assert rate_limit_reset_s(response(requests_reset=soon, tokens_reset=later)) == pytest.approx(40, abs=1)
    assert rate_limit_reset_s(response(requests_reset="not a time")) is None
    assert rate_limit_reset_s(httpx2.Response(429)) is None


# --- against the emulator -----------------------------------------------------------------------------


async def test_staging_checks_the_file_and_sends_nothing(emulator: SandboxServer, backend: AnthropicBackend,
                                                         tmp_path: Path) -> None:
    before = len(emulator.sandbox.requests)
    path = write(tmp_path / "in.jsonl", [line("a")])
    staged = await backend.upload(path, "anthropic")
    assert (staged.ref, staged.bytes, staged.reusable) == (str(path.absolute()), path.stat().st_size, True)
    for target, fmt, code in [(tmp_path, "anthropic", "input_missing"), (tmp_path / "no.jsonl", "anthropic",
                                                                          "input_missing"),
                              (path, "openai", "unsupported_line_format")]:
        with pytest.raises(InvalidRequestError) as refused:
            await backend.upload(target, fmt)
        assert refused.value.code == code
    assert len(emulator.sandbox.requests) == before


@pytest.mark.parametrize(("limits", "lines", "code"), [
    ({}, [], "input_empty"),
    ({"max_requests": 2}, [line("a"), line("b"), line("c")], "too_many_requests"),
    ({"max_bytes": 100}, [line("a"), line("b")], "input_too_large"),
])
async def test_what_the_api_would_refuse_is_refused_before_sending(emulator: SandboxServer, backend: AnthropicBackend,
                                                                   tmp_path: Path, limits: dict[str, int],
                                                                   lines: list[dict[str, Any]], code: str) -> None:
    backend.capabilities = dataclasses.replace(CAPABILITIES, **limits)
    before = operations(emulator, "create_batch")
    with pytest.raises(InvalidRequestError) as refused:
        await backend.create(spec(write(tmp_path / "in.jsonl", lines)))
    assert refused.value.code == code and operations(emulator, "create_batch") == before


async def test_a_file_growing_while_it_is_sent_creates_nothing(emulator: SandboxServer, backend: AnthropicBackend,
                                                               tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "in.jsonl", [line("a"), line("b")])
    counted = InlineBody.scan

    def count_then_append(file: Path) -> InlineBody:
        scanned = counted(file)
        write(file, [line("a"), line("b"), line("c")])
        return scanned

    monkeypatch.setattr(inline_body.InlineBody, "scan", staticmethod(count_then_append))
    jobs = len(emulator.sandbox.jobs)
    with pytest.raises(BackendError) as caught:
        await backend.create(spec(path))
    assert caught.value.code == "input_changed" and len(emulator.sandbox.jobs) == jobs


async def test_the_apis_refusal_comes_through_typed(emulator: SandboxServer, backend: AnthropicBackend,
                                                    tmp_path: Path) -> None:
    """The backend does not re-check lines (the preflight did); the API's 400 arrives with its message and id."""
    with pytest.raises(InvalidRequestError) as refused:
        await backend.create(spec(write(tmp_path / "in.jsonl", [line("has space")])))
    assert refused.value.code == "invalid_request_error" and "requests.0.custom_id" in refused.value.message
    assert refused.value.request_id and refused.value.request_id.startswith("req_")
    wrong = AnthropicBackend(api_key="sk-ant-wrong-key", base_url=emulator.base_url, options=FAST)
    try:
        with pytest.raises(AuthenticationError) as denied:
            await wrong.list()
        assert "sk-ant-wrong-key" not in str(denied.value)
    finally:
        await wrong.aclose()


async def finished(server: SandboxServer, backend: AnthropicBackend, path: Path) -> str:
    job = await backend.create(spec(path))
    server.sandbox.clock.advance(60)
    assert (await backend.get(job.id)).status is JobStatus.COMPLETED
    return job.id


async def test_results_on_another_host_are_never_fetched(emulator: SandboxServer, backend: AnthropicBackend,
                                                         tmp_path: Path) -> None:
    job_id = await finished(emulator, backend, write(tmp_path / "in.jsonl", [line("a")]))
    [own] = await backend.results(job_id)
    assert own.kind == "combined" and own.locator.startswith(emulator.origin + "/")
    elsewhere = emulator.origin.replace("127.0.0.1", "localhost")  # the same server under another name
    emulator.sandbox.config.public_base_url = elsewhere
    before = operations(emulator, "download")
    with pytest.raises(UnexpectedResponse) as refused:
        await backend.results(job_id)
    assert refused.value.code == "results_url_elsewhere" and "localhost" in refused.value.message
    with pytest.raises(UnexpectedResponse):
        await backend.download(ResultSource(kind="combined", locator=elsewhere + own.locator.removeprefix(
            emulator.origin)), io.BytesIO())
    assert operations(emulator, "download") == before
    out = io.BytesIO()
    assert await backend.download(own, out) == len(out.getvalue()) > 0  # the batch's own host is fine


async def test_delete_takes_only_ended_batches(emulator: SandboxServer, backend: AnthropicBackend,
                                               tmp_path: Path) -> None:
    path = write(tmp_path / "in.jsonl", [line("a"), line("b")])
    running = await backend.create(spec(path))
    before = operations(emulator, "delete_batch")
    with pytest.raises(ConflictError, match="cancel it and wait"):
        await backend.delete(running.id)
    assert operations(emulator, "delete_batch") == before
    job_id = await finished(emulator, backend, path)
    await backend.delete(job_id)
    with pytest.raises(NotFoundError):
        await backend.get(job_id)


async def test_without_its_file_every_batch_in_the_window_is_a_candidate(emulator: SandboxServer,
                                                                         backend: AnthropicBackend,
                                                                         tmp_path: Path) -> None:
    emulator.sandbox.clock.advance(3600)
    planned_at = datetime.fromtimestamp(emulator.sandbox.clock.now(), UTC)
    path = write(tmp_path / "in.jsonl", [line("a")])
    gone = spec(tmp_path / "gone.jsonl", planned_at=planned_at)
    assert await backend.recover(gone) is None  # nothing since the planned time: nothing to find
    made = [(await backend.create(spec(path))).id for _ in range(2)]
    with pytest.raises(RecoveryInconclusive, match="can no longer be read") as caught:
        await backend.recover(gone)
    assert set(caught.value.candidates) == set(made)


async def test_a_same_size_batch_from_before_the_plan_or_of_another_submission_is_not_ours(
        emulator: SandboxServer, backend: AnthropicBackend, tmp_path: Path) -> None:
    """Without metadata the request count is the match; what else is known narrows it: a batch created a
    minute before the create was planned (inside the old five-minute allowance for clock skew) is not ours,
    nor one the job store attributes to another submission."""
    emulator.sandbox.clock.advance(3600)
    path = write(tmp_path / "in.jsonl", [line("a"), line("b")])
    earlier = await backend.create(spec(path))
    emulator.sandbox.clock.advance(60)
    planned_at = datetime.fromtimestamp(emulator.sandbox.clock.now(), UTC)  # the emulator's clock is ours here
    other = await backend.create(spec(path))
    ours = await backend.create(spec(path))
    lost = spec(path, planned_at=planned_at)
    with pytest.raises(RecoveryInconclusive) as caught:
        await backend.recover(lost)
    assert set(caught.value.candidates) == {other.id, ours.id}  # the earlier one is no candidate
    found = await backend.recover(lost.model_copy(update={"not_ours": frozenset({other.id})}))
    assert found is not None and found.id == ours.id and earlier.id not in caught.value.candidates


def test_the_services_clock_is_read_from_its_date_header() -> None:
    now = datetime.now(UTC)
    ahead = httpx2.Response(200, headers={"date": format_datetime(now + timedelta(minutes=10), usegmt=True)})
    offset = service_offset(ahead)
    assert offset is not None and timedelta(minutes=9, seconds=58) <= offset <= timedelta(minutes=10)
    assert service_offset(httpx2.Response(200)) is None
    assert service_offset(httpx2.Response(200, headers={"date": "yesterday"})) is None
    # a service clock ten minutes behind ours still finds a batch made after the plan; without a Date, the
    # walk allows the fixed skew
    assert planned_on_service_clock(now, -offset) == now - offset - MEASURED_SKEW
    assert planned_on_service_clock(now, None) == now - CLOCK_SKEW


async def test_overloaded_is_ridden_out_where_safe_and_a_create_is_never_resent_blindly(
        emulator: SandboxServer, backend: AnthropicBackend, tmp_path: Path) -> None:
    """A 529 to a read is retried. To a create it is not: the API documents no rule that a 529 made nothing, so
    the create counts as unconfirmed, recovery looks first, and only then is it sent once more."""
    emulator.sandbox.clock.advance(3600)  # earlier batches of this size lie before the window
    path = write(tmp_path / "in.jsonl", [line(f"o{i}") for i in range(7)])
    emulator.sandbox.faults.fail_next("create_batch", "overloaded")
    emulator.sandbox.faults.fail_next("get_batch", "overloaded", times=2)
    before = operations(emulator, "create_batch"), len(emulator.sandbox.jobs)
    lost = spec(path, planned_at=datetime.fromtimestamp(emulator.sandbox.clock.now(), UTC))
    with pytest.raises(CreateNotConfirmed):
        await backend.create(lost)
    assert (operations(emulator, "create_batch"), len(emulator.sandbox.jobs)) == (before[0] + 1, before[1])
    assert await backend.recover(lost) is None  # nothing was made
    made = await create_once(backend, lost, looks=1, pause_s=0)
    assert (await backend.get(made.id)).id == made.id  # two 529s on the read, ridden out
    assert len(emulator.sandbox.jobs) == before[1] + 1
