"""Every backend against its emulator over loopback HTTP: the OpenAI family (OpenAI, DeepInfra, Groq),
DigitalOcean in both its wire dialects, and Anthropic.

One suite, parametrized over them (fixtures in ``test_backend_contract_support``): upload (streamed, or
for Anthropic only staged: its requests travel inline in the create) -> create -> get -> list paging -> cancel ->
results -> download, and the faults on every call that is safe to repeat. What happens to a create
whose answer is lost is the other half of the suite, ``test_backend_contract_once``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from batch_mcp.backends.base import (
    TOKEN_METADATA_KEY,
    AuthenticationError,
    Backend,
    InvalidRequestError,
    NotFoundError,
    ResultsNotReady,
)
from batch_mcp.domain import JobPage, JobStatus
from batch_mcp.sandbox import SandboxServer

from test_backend_contract_support import (
    CHAT,
    FAILING,
    Plan,
    creates,
    finish,
    first_status,
    godo,
    inline,
    jobs_with,
    line_format,
    made_since,
    newest_seq,
    open_backend,
    past_validation,
)

pytest_plugins = ["test_backend_contract_support"]

IDS = [f"r{i}" for i in range(6)]
SUCCEEDED = [custom_id for custom_id in IDS if custom_id != f"r{FAILING}"]


async def test_upload_create_poll_results_download(emulator: SandboxServer, backend: Backend,
                                                   requests_file: Path, tmp_path: Path, plan: Plan) -> None:
    caps = backend.capabilities
    progress: list[tuple[int, int]] = []

    async def on_progress(done: int, total: int) -> None:
        progress.append((done, total))

    staged = await backend.upload(requests_file, line_format(backend), on_progress)
    size = requests_file.stat().st_size
    assert (staged.backend, staged.bytes, staged.filename) == (backend.name, size, "requests.jsonl")
    assert progress[-1] == (size, size) and staged.reusable

    metadata = {"team": "support"} if caps.metadata is not None else {}
    spec = plan(staged.ref, metadata=metadata)
    seq = newest_seq(emulator)
    job = await backend.create(spec)
    assert (job.backend, job.status) == (backend.name, first_status(backend))
    assert job.input_ref == (None if inline(backend) else staged.ref)
    assert job.endpoint == (None if godo(emulator) or inline(backend) else CHAT)
    assert job.client_token == (None if inline(backend) else spec.client_token)  # Anthropic echoes nothing of ours
    assert job.metadata == ({} if godo(emulator) else metadata)
    assert made_since(emulator, seq) == [job.id]
    if not inline(backend):
        assert jobs_with(emulator, spec.client_token) == [job.id]
    with pytest.raises(ResultsNotReady):
        await backend.results(job.id)

    ended = await finish(emulator, backend, job.id)
    assert ended.status is JobStatus.COMPLETED and ended.results_ready
    assert ended.counts is not None and (ended.counts.total, ended.counts.succeeded, ended.counts.failed) == (6, 5, 1)

    sources = await backend.results(job.id)
    ids: dict[str, list[str]] = {}
    for source in sources:
        dest = tmp_path / f"{source.kind}.jsonl"
        with dest.open("wb") as out:
            written = await backend.download(source, out)
        assert written == dest.stat().st_size > 0
        ids[source.kind] = sorted(json.loads(line)["custom_id"] for line in dest.read_text().splitlines())
    if caps.results == "combined":  # one stream: successes and the failure alike
        assert ids == {"combined": IDS}
    else:
        assert ids == {"output": SUCCEEDED, "errors": [f"r{FAILING}"]}
    presigned = {"upload", "download"} if caps.upload == "presigned" else set()
    assert all(record.authorization is (record.operation not in presigned) for record in emulator.sandbox.requests)


async def test_counts_while_validating_follow_the_variant(emulator: SandboxServer, backend: Backend,
                                                          requests_file: Path, plan: Plan) -> None:
    """DeepInfra sends ``request_counts: null`` while validating: counts are unknown, not zero."""
    job = await backend.create(plan((await backend.upload(requests_file, line_format(backend))).ref))
    assert (job.counts is None) is (backend.name == "deepinfra")


async def test_a_malformed_file_fails_with_line_numbers(emulator: SandboxServer, backend: Backend,
                                                        tmp_path: Path, plan: Plan) -> None:
    """Checked asynchronously it fails the job; Anthropic checks the body at create and refuses it whole."""
    path = write_first_line_then_garbage(tmp_path / "bad.jsonl", line_format(backend))
    spec = plan((await backend.upload(path, line_format(backend))).ref)
    if inline(backend):
        seq = newest_seq(emulator)
        with pytest.raises(InvalidRequestError, match="not valid JSON"):
            await backend.create(spec)
        assert made_since(emulator, seq) == []
        return
    job = await backend.create(spec)
    ended = await finish(emulator, backend, job.id)
    assert ended.status is JobStatus.FAILED and not ended.results_ready
    assert godo(emulator) or 2 in [error.line for error in ended.errors]
    assert await backend.results(job.id) == []


def write_first_line_then_garbage(path: Path, fmt: str) -> Path:
    first = ({"custom_id": "a", "params": {"model": "m", "max_tokens": 5, "messages": [{"role": "user",
                                                                                          "content": "x"}]}}
             if fmt == "anthropic" else {"custom_id": "a", "method": "POST", "url": CHAT, "body": {"model": "m"}})
    path.write_text(json.dumps(first) + "\nthis is not json\n")
    return path


async def test_list_pages_newest_first_and_filters_by_status(emulator: SandboxServer, backend: Backend,
                                                             requests_file: Path, plan: Plan) -> None:
    ref = (await backend.upload(requests_file, line_format(backend))).ref
    made = [(await backend.create(plan(ref))).id for _ in range(5)]
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(100):
        page: JobPage = await backend.list(limit=2, cursor=cursor)
        assert len(page.jobs) <= 2
        seen += [job.id for job in page.jobs]
        if not page.has_more:
            break
        cursor = page.next_cursor
    assert seen[:5] == made[::-1] and len(seen) == len(set(seen)) == len(emulator.sandbox.jobs)
    starting = await backend.list(status=first_status(backend), limit=100)
    assert {job.id for job in starting.jobs} >= set(made)
    assert all(job.status is first_status(backend) for job in starting.jobs)


async def test_cancel_ends_cancelled(emulator: SandboxServer, backend: Backend, requests_file: Path,
                                     plan: Plan) -> None:
    job = await backend.create(plan((await backend.upload(requests_file, line_format(backend))).ref))
    await past_validation(emulator, backend, job.id)
    cancelling = await backend.cancel(job.id)
    assert cancelling.status in (JobStatus.CANCELLING, JobStatus.CANCELLED)
    assert (await finish(emulator, backend, job.id)).status is JobStatus.CANCELLED
    await backend.results(job.id)  # an ended job: whatever it finished, possibly nothing


async def test_refusals_are_typed(emulator: SandboxServer, backend: Backend, plan: Plan, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="batch_missing"):
        await backend.get("batch_missing")
    before = creates(emulator)
    # an input the service does not have; for Anthropic, a file that is not on this disk
    with pytest.raises(InvalidRequestError if inline(backend) else NotFoundError):
        await backend.create(plan(str(tmp_path / "missing.jsonl") if inline(backend) else "file-missing"))
    assert creates(emulator) == before + (0 if inline(backend) else 1)
    wrong = open_backend(emulator, "wrong")
    try:
        with pytest.raises(AuthenticationError):
            await wrong.list()
    finally:
        await wrong.aclose()


async def test_what_the_backend_does_not_run_is_refused_before_sending(emulator: SandboxServer,
                                                                       backend: Backend, plan: Plan) -> None:
    before = creates(emulator)
    with pytest.raises(InvalidRequestError, match="completion window"):
        await backend.create(plan("file-1", completion_window="8d"))
    if backend.capabilities.reserved_metadata_keys:
        with pytest.raises(InvalidRequestError, match="reserved"):
            await backend.create(plan("file-1", metadata={TOKEN_METADATA_KEY: "x"}))
    if backend.capabilities.metadata is None:
        with pytest.raises(InvalidRequestError, match="keeps no job metadata"):
            await backend.create(plan("file-1", metadata={"team": "support"}))
    assert creates(emulator) == before


async def test_groq_takes_windows_up_to_seven_days(emulator: SandboxServer, backend: Backend,
                                                   requests_file: Path, plan: Plan) -> None:
    spec = plan((await backend.upload(requests_file, line_format(backend))).ref, completion_window="7d")
    if backend.name != "groq":
        with pytest.raises(InvalidRequestError, match="24h"):
            await backend.create(spec)
        return
    assert (await backend.create(spec)).completion_window == "7d"


@pytest.mark.parametrize("kind", ["server_error", "drop", "rate_limit"])
async def test_repeatable_calls_ride_out_faults(emulator: SandboxServer, backend: Backend,
                                                requests_file: Path, tmp_path: Path, plan: Plan, kind: str) -> None:
    faults = emulator.sandbox.faults
    operations = [op for op in ("create_file", "upload", "get_batch", "list_batches", "cancel_batch", "download")
                  if op in faults.operations]
    for operation in operations:
        faults.fail_next(operation, kind, retry_after_s=0)  # type: ignore[arg-type]
    staged = await backend.upload(requests_file, line_format(backend))
    doomed = await backend.create(plan(staged.ref))
    await past_validation(emulator, backend, doomed.id)
    assert (await backend.cancel(doomed.id)).is_terminal is False
    job = await backend.create(plan(staged.ref))
    assert (await backend.get(job.id)).id == job.id
    assert job.id in [listed.id for listed in (await backend.list(limit=100)).jobs]
    await finish(emulator, backend, job.id)
    first = (await backend.results(job.id))[0]  # the output file, or Anthropic's one stream
    dest = tmp_path / "out.jsonl"
    with dest.open("wb") as out:
        await backend.download(first, out)
    assert len(dest.read_text().splitlines()) == (len(IDS) if first.kind == "combined" else len(SUCCEEDED))
    assert all(faults.take(operation) is None for operation in operations)  # each fired

