"""Resource updates reach only who asked for them: 2025-era sessions through resources/subscribe (which the
server now advertises), 2026-07-28 clients through subscriptions/listen. Real SDK Clients, in memory."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

import anyio
import pytest
from mcp import Client, MCPError

from batch_mcp.sandbox import SandboxServer
from batch_mcp.server import build_server, open_app_state

from conftest import settings_for

JOBS = "batch://jobs"
#: The SDK Client's legacy subscribe calls are deprecated, and exactly what 2025-era clients send.
pytestmark = pytest.mark.filterwarnings("ignore:resources/(un)?subscribe is removed")


class Updates:
    """The notifications/resources/updated a client received, by URI."""

    def __init__(self) -> None:
        self.uris: list[str] = []

    async def __call__(self, message) -> None:
        if getattr(message, "method", None) == "notifications/resources/updated":
            self.uris.append(str(message.params.uri))

    async def settled(self) -> list[str]:
        await anyio.sleep(0.2)  # notifications travel beside the tool results; let the last ones arrive
        return self.uris


async def _submit(client: Client) -> str:
    result = await client.call_tool("submit_batch", {"path": "data/tickets.jsonl", "new": True})
    return result.structured_content["batch"]["batch_id"]


async def _finish(client: Client, batch_id: str) -> None:
    waited = await client.call_tool("wait_for_batch", {"batch_id": batch_id, "timeout_s": 60,
                                                       "poll_interval_s": 0.05})
    assert waited.structured_content["batch"]["terminal"]


async def test_legacy_sessions_get_only_what_they_subscribed_to(sandbox: SandboxServer, workdir: Path) -> None:
    updates = Updates()
    async with open_app_state(settings_for(sandbox, workdir)) as state, \
            Client(build_server(state), mode="legacy", message_handler=updates) as client:
        assert client.server_capabilities.resources.subscribe is True

        unwatched = await _submit(client)
        await _finish(client, unwatched)
        assert await updates.settled() == []  # status changes, but nobody asked

        watched = await _submit(client)
        await client.subscribe_resource(f"{JOBS}/{watched}")
        await _finish(client, watched)
        seen = await updates.settled()
        assert seen and set(seen) == {f"{JOBS}/{watched}"}  # not the list, not the other job

        updates.uris.clear()
        await client.unsubscribe_resource(f"{JOBS}/{watched}")
        await client.subscribe_resource(JOBS)
        listed = await _submit(client)
        await _finish(client, listed)
        assert set(await updates.settled()) == {JOBS}
        assert state.subscriptions
    assert not state.subscriptions  # a closed connection's subscriptions are forgotten


async def test_a_subscription_hears_changes_another_session_saw(sandbox: SandboxServer, workdir: Path) -> None:
    watcher_updates, worker_updates = Updates(), Updates()
    async with AsyncExitStack() as stack:
        state = await stack.enter_async_context(open_app_state(settings_for(sandbox, workdir)))
        server = build_server(state)
        watcher = await stack.enter_async_context(Client(server, mode="legacy", message_handler=watcher_updates))
        worker = await stack.enter_async_context(Client(server, mode="legacy", message_handler=worker_updates))
        batch_id = await _submit(worker)
        await watcher.subscribe_resource(f"{JOBS}/{batch_id}")
        await _finish(worker, batch_id)
        assert f"{JOBS}/{batch_id}" in await watcher_updates.settled()
        assert worker_updates.uris == []


async def test_modern_listeners_get_their_uris_and_nothing_else(sandbox: SandboxServer, workdir: Path) -> None:
    stray = Updates()
    async with open_app_state(settings_for(sandbox, workdir)) as state, \
            Client(build_server(state), message_handler=stray) as client:
        assert client.server_capabilities.resources.subscribe is True
        batch_id = await _submit(client)
        events = []
        async with client.listen(resource_subscriptions=[JOBS]) as subscription:
            await _finish(client, batch_id)
            with anyio.move_on_after(2):
                async for event in subscription:
                    events.append(event)
                    break
        assert events and str(events[0].uri) == JOBS  # the list changed; its job was not asked for
        assert set(await stray.settled()) <= {JOBS}  # what the stream delivered; no job nobody asked for


@pytest.mark.parametrize("uri", ["batch://other", "batch://jobs/", "batch://jobs/a/b", "batch://jobs?cursor=x",
                                 "file:///etc/passwd"])
async def test_subscribing_to_what_never_changes_is_refused(sandbox: SandboxServer, workdir: Path,
                                                            uri: str) -> None:
    async with open_app_state(settings_for(sandbox, workdir)) as state, \
            Client(build_server(state), mode="legacy") as client:
        with pytest.raises(MCPError) as refused:
            await client.subscribe_resource(uri)
        assert f"subscribe to {JOBS} or {JOBS}/{{batch_id}}" in refused.value.message
        assert not state.subscriptions


async def test_subscriptions_per_connection_are_bounded(sandbox: SandboxServer, workdir: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from batch_mcp.tools import context

    monkeypatch.setattr(context, "MAX_SUBSCRIPTIONS", 3)
    async with open_app_state(settings_for(sandbox, workdir)) as state, \
            Client(build_server(state), mode="legacy") as client:
        for n in range(3):
            await client.subscribe_resource(f"{JOBS}/b-{n}")
        await client.subscribe_resource(f"{JOBS}/b-0")  # again: no new one
        with pytest.raises(MCPError) as refused:
            await client.subscribe_resource(f"{JOBS}/b-3")
        assert "unsubscribe from finished jobs first" in refused.value.message
        await client.unsubscribe_resource(f"{JOBS}/b-0")
        await client.subscribe_resource(f"{JOBS}/b-3")


async def test_a_subscriber_hears_a_change_no_agent_was_waiting_on(sandbox: SandboxServer, workdir: Path) -> None:
    """A host that subscribes to a job and then only listens (nobody calls wait_for_batch) once heard nothing
    ever: the server now looks at its running jobs every watch_interval_s (leased: one replica of many)."""
    updates = Updates()
    settings = settings_for(sandbox, workdir, watch_interval_s=0.1)
    async with open_app_state(settings) as state, \
            Client(build_server(state), mode="legacy", message_handler=updates) as client:
        batch_id = await _submit(client)
        await client.subscribe_resource(f"{JOBS}/{batch_id}")
        with anyio.fail_after(60):
            while not (record := state.service.store.get_job(batch_id)).last_seen.is_terminal:
                await anyio.sleep(0.05)
        assert record.status == "completed"
        assert f"{JOBS}/{batch_id}" in await updates.settled()
