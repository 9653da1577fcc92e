"""Tables, retries and cost read every backend's result lines the same way: OpenAI's output and error files,
DeepInfra's ``response: null`` with an ``error``, and the lines of requests a cancel cut off."""

from __future__ import annotations

from pathlib import Path

from test_backend_contract import backend, emulator, finish, planned, requests_file

from batch_mcp.backends.base import Backend
from batch_mcp.sandbox import SandboxServer
from batch_mcp.services.results import ResultIndex

__all__ = ["backend", "emulator", "requests_file"]  # fixtures shared with the contract suite


async def _downloaded(backend: Backend, job_id: str, folder: Path) -> list[Path]:
    paths = []
    for source in await backend.results(job_id):
        path = folder / f"{job_id}.{source.kind}.jsonl"
        with path.open("wb") as out:
            await backend.download(source, out)
        paths.append(path)
    return paths


async def test_every_result_line_is_read_with_its_outcome_model_and_usage(
        emulator: SandboxServer, backend: Backend, requests_file: Path, tmp_path: Path) -> None:
    job = await backend.create(planned((await backend.upload(requests_file, "openai")).ref))
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
        emulator: SandboxServer, backend: Backend, requests_file: Path, tmp_path: Path) -> None:
    job = await backend.create(planned((await backend.upload(requests_file, "openai")).ref))
    emulator.sandbox.clock.advance(2.2)  # past validating and queued: some requests have run
    await backend.cancel(job.id)
    ended = await finish(emulator, backend, job.id)
    index = ResultIndex(await _downloaded(backend, ended.id, tmp_path))
    try:
        assert index.unreadable_lines == 0
        codes = {record.error_code for custom_id in index.ids()
                 if (record := index.get(custom_id)) and not record.succeeded}
        assert None not in codes and "unknown_error" not in codes
        # OpenAI-style files give a cut-off request a line of its own; DigitalOcean's leave it out (missing)
        assert ("batch_cancelled" in codes) is (backend.name != "digitalocean")
    finally:
        index.close()
