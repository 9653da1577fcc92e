"""delete_batch (issue 11): an ended Anthropic batch is deleted at the provider, once, and only once it has ended;
what this server made (the job's record, the result files it downloaded) stays. The tool exists only where a
configured backend can delete, and says it is destructive."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from batch_mcp.backends.base import NotFoundError
from batch_mcp.backends.registry import CATALOG
from batch_mcp.config import Settings
from batch_mcp.domain import Ref
from batch_mcp.sandbox import SandboxServer
from batch_mcp.schemas.jobs import DELETED_AT
from batch_mcp.server import open_app_state
from batch_mcp.services.errors import NotDeletable

from conftest import fast_config, mcp_session, only_digitalocean, settings_for

FILE = "data/reviews-anthropic.jsonl"


@pytest.fixture(scope="module")
def emulator() -> Iterator[SandboxServer]:
    with SandboxServer(fast_config(backend="anthropic", failure_rate=0.0)) as server:
        yield server


@pytest.fixture
def both(emulator: SandboxServer, sandbox: SandboxServer, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """DigitalOcean (the default) and Anthropic, each on its own emulator."""
    only_digitalocean(monkeypatch)
    emulator.sandbox.faults.reset()
    monkeypatch.setenv("ANTHROPIC_API_KEY", emulator.token)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", emulator.base_url)
    return settings_for(sandbox, workdir)


def deletes(emulator: SandboxServer) -> int:
    return sum(record.operation == "delete_batch" for record in emulator.sandbox.requests)


async def test_an_ended_batch_is_deleted_once_and_what_we_made_stays(emulator: SandboxServer, both: Settings) -> None:
    async with open_app_state(both) as state:
        service = state.service
        submitted = await service.submit(FILE, backend="anthropic")
        batch_id = submitted.batch.batch_id
        assert (await service.wait(batch_id, 30, 0.05)).batch.status == "completed"
        summary = await service.download(batch_id)
        before = deletes(emulator)
        deleted = await service.delete(batch_id)
        again = await service.delete(batch_id)  # idempotent: answered from the record, nothing sent
        with pytest.raises(NotFoundError):  # gone at the provider
            await service.get(batch_id)
        shown = await service.view(batch_id)  # get_batch: how it ended, and that it was deleted
        record = service.store.get_job(batch_id)
    assert (deleted.deleted_now, again.deleted_now) == (True, False)
    assert deleted.batch_id == again.batch_id == batch_id and deleted.status == "completed"
    assert deletes(emulator) == before + 1
    kept = {summary.output_path, summary.table_csv_path, summary.table_jsonl_path} - {None}
    assert set(deleted.kept_files) >= {summary.output_path} and kept
    assert all(Path(path).is_file() for path in kept)  # downloaded files are the user's: never removed
    assert record is not None and DELETED_AT in record.last_seen.extra and not record.last_seen.results_ready
    assert shown.status == "completed" and not shown.results_ready and "Deleted at the provider" in shown.next_step


async def test_a_running_batch_is_refused_and_nothing_is_sent(emulator: SandboxServer, both: Settings) -> None:
    emulator.sandbox.config.queued_s = 60  # stays in progress for the whole test
    try:
        async with open_app_state(both) as state:
            submitted = await state.service.submit(FILE, backend="anthropic", new=True)
            before = deletes(emulator)
            with pytest.raises(NotDeletable, match="call cancel_batch, then wait_for_batch"):
                await state.service.delete(submitted.batch.batch_id)
            native = Ref.parse(submitted.batch.batch_id).native
            assert (await state.service.get(submitted.batch.batch_id)).id == native  # still there
    finally:
        emulator.sandbox.config.queued_s = 0.05
    assert deletes(emulator) == before


async def test_a_backend_that_cannot_delete_is_told_apart(both: Settings, sandbox: SandboxServer) -> None:
    async with open_app_state(both) as state:
        submitted = await state.service.submit("data/tickets.jsonl")
        with pytest.raises(NotDeletable, match="DigitalOcean cannot delete batches"):
            await state.service.delete(submitted.batch.batch_id)
        with pytest.raises(NotDeletable, match="job group"):
            await state.service.delete("group-0123456789abcdef")
    assert not CATALOG["digitalocean"].capabilities.deletes and CATALOG["anthropic"].capabilities.deletes


async def test_the_tool_is_offered_only_where_a_backend_deletes(both: Settings, sandbox: SandboxServer,
                                                                workdir: Path, monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    async with mcp_session(both) as (client, _):
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        submitted = await client.call_tool("submit_batch", {"path": FILE, "backend": "anthropic"})
        batch_id = submitted.structured_content["batch"]["batch_id"]
        await client.call_tool("wait_for_batch", {"batch_id": batch_id, "timeout_s": 30, "poll_interval_s": 0.05})
        deleted = await client.call_tool("delete_batch", {"batch_id": batch_id})
        refused = await client.call_tool("delete_batch", {"batch_id": "digitalocean:nosuch"})
    hints = tools["delete_batch"].annotations
    assert hints is not None and (hints.destructive_hint, hints.idempotent_hint, hints.read_only_hint) == (
        True, True, False)
    assert "Anthropic only" in (tools["delete_batch"].description or "")
    assert not deleted.is_error and deleted.structured_content["deleted_now"] is True
    assert refused.is_error and "cannot delete batches" in refused.content[0].text
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    async with mcp_session(settings_for(sandbox, workdir)) as (client, _):
        assert "delete_batch" not in {tool.name for tool in (await client.list_tools()).tools}
