"""Tables, retries and cost read every backend's result lines the same way: OpenAI's output and error files,
DeepInfra's ``response: null`` with an ``error``, Anthropic's one stream, and the lines of requests a cancel
cut off."""

from __future__ import annotations

from pathlib import Path

from batch_mcp.backends.base import Backend
from batch_mcp.sandbox import SandboxServer
from batch_mcp.services.results import ResultIndex

from test_backend_contract_support import Plan, finish, inline, line_format

pytest_plugins = ["test_backend_contract_support"]
#: What a request a cancel cut off reads as: a line of its own in OpenAI-style error files and in Anthropic's
#: stream; DigitalOcean's files leave it out (missing).
CUT_OFF_CODES = {"digitalocean": None, "anthropic": "canceled"}


async def _downloaded(backend: Backend, job_id: str, folder: Path) -> list[Path]:
    paths = []
    for source in await backend.results(job_id):
        path = folder / f"{job_id}.{source.kind}.jsonl"
        with path.open("wb") as out:
            await backend.download(source, out)
        paths.append(path)
    return paths


async def test_every_result_line_is_read_with_its_outcome_model_and_usage(
        emulator: SandboxServer, backend: Backend, requests_file: Path, tmp_path: Path, plan: Plan) -> None:
    job = await backend.create(plan((await backend.upload(requests_file, line_format(backend))).ref))
    await finish(emulator, backend, job.id)
    index = ResultIndex(await _downloaded(backend, job.id, tmp_path))
    try:
        assert index.unreadable_lines == 0 and sorted(index.ids()) == [f"r{i}" for i in range(6)]
        records = {custom_id: index.get(custom_id) for custom_id in index.ids()}
        failed = {custom_id for custom_id, record in records.items() if record and not record.succeeded}
        assert failed == {"r2"}
        assert records["r2"] is not None and records["r2"].error_code not in (None, "unknown_error")
        ok = records["r0"]
        assert ok is not None and ok.text and ok.model == "m-1" and ok.usage.input_tokens > 0
    finally:
        index.close()


async def test_requests_a_cancel_cut_off_read_as_failures_with_a_code(
        emulator: SandboxServer, backend: Backend, requests_file: Path, tmp_path: Path, plan: Plan) -> None:
    job = await backend.create(plan((await backend.upload(requests_file, line_format(backend))).ref))
    emulator.sandbox.clock.advance(1.2 if inline(backend) else 2.2)  # past validating (none inline) and queued
    await backend.cancel(job.id)
    ended = await finish(emulator, backend, job.id)
    index = ResultIndex(await _downloaded(backend, ended.id, tmp_path))
    try:
        assert index.unreadable_lines == 0
        codes = {record.error_code for custom_id in index.ids()
                 if (record := index.get(custom_id)) and not record.succeeded}
        assert None not in codes and "unknown_error" not in codes
        cut_off = CUT_OFF_CODES.get(backend.name, "batch_cancelled")
        assert (cut_off in codes) if cut_off else not ({"batch_cancelled", "canceled"} & codes)
    finally:
        index.close()
