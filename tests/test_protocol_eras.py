"""The 2026-07-28 protocol deprecates roots, sampling and protocol logging (SEP-2577): the folders the tools may
use come from configuration (BATCH_MCP_ALLOWED_DIRS or --allow-dir) and tool arguments, the server's logs go to
its stderr, and it asks the client for nothing. A 2025-11-25 client that offers roots still narrows the folders.

Real server processes over stdio, driven by the SDK's client in each era; the client opts in to every log level
and offers sampling, so a log notification or a sampling request the server sent would be seen.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.client.stdio import stdio_client
from mcp.types import CreateMessageResult, ListRootsResult, Root, TextContent

from batch_mcp.sandbox import SandboxServer

from test_stdio import server_env, stdio_server


@dataclass
class Seen:
    """What the server asked of the client, or told it, outside the answers to its calls."""

    logs: list[Any] = field(default_factory=list)
    samplings: list[Any] = field(default_factory=list)
    roots_asked: int = 0
    notifications: list[str] = field(default_factory=list)


@asynccontextmanager
async def connected(env: dict[str, str], *args: str, cwd: Path, mode: str, stderr: Path,
                    roots: list[Path] | None = None) -> AsyncIterator[tuple[Client, Seen]]:
    seen = Seen()

    async def on_log(params: Any) -> None:
        seen.logs.append(params)

    async def on_sampling(context: Any, params: Any) -> CreateMessageResult:
        seen.samplings.append(params)
        return CreateMessageResult(role="assistant", content=TextContent(type="text", text="no"), model="none")

    async def on_roots(context: Any) -> ListRootsResult:
        seen.roots_asked += 1
        return ListRootsResult(roots=[Root(uri=folder.as_uri(), name=folder.name) for folder in roots or []])

    async def on_message(message: Any) -> None:
        if method := getattr(getattr(message, "root", message), "method", None):
            seen.notifications.append(method)

    with stderr.open("w") as errlog:
        async with Client(stdio_client(stdio_server(env, *args, cwd=cwd), errlog=errlog), mode=mode,
                          logging_callback=on_log, log_level="debug", sampling_callback=on_sampling,
                          list_roots_callback=on_roots if roots is not None else None,
                          message_handler=on_message) as client:
            yield client, seen


async def finished(client: Client, batch_id: str) -> None:
    for _ in range(100):  # each wait answers within a few seconds; the sandbox's job takes a fraction of one
        waited = await client.call_tool("wait_for_batch", {"batch_id": batch_id})
        assert not waited.is_error, waited.content[0].text
        if not waited.structured_content["timed_out"]:
            return
    raise AssertionError(f"{batch_id} never finished")


def refusal(result: Any) -> str:
    assert result.is_error, result.structured_content
    return result.content[0].text


@pytest.fixture
def elsewhere(tmp_path: Path, workdir: Path) -> Path:
    """The server's working directory: a project folder of its own, holding a valid file too."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    shutil.copyfile(workdir / "data" / "tickets.jsonl", folder / "tickets.jsonl")
    return folder


@pytest.mark.parametrize("configured_by", ["environment", "flag"])
async def test_without_roots_the_configured_folders_and_the_arguments_decide(
        sandbox: SandboxServer, workdir: Path, elsewhere: Path, tmp_path: Path, configured_by: str) -> None:
    """A 2026-07-28 client offering no roots: relative paths start in the configured folder (not the working
    directory), a tool argument names the folder to write into, and everything else is refused."""
    env = {**server_env(sandbox, workdir), "BATCH_MCP_LOG_LEVEL": "DEBUG"}
    args: list[str] = []
    if configured_by == "flag":
        del env["BATCH_MCP_ALLOWED_DIRS"]
        args = ["--allow-dir", str(workdir)]
    stderr = tmp_path / "stderr.txt"
    async with connected(env, *args, cwd=elsewhere, mode="auto", stderr=stderr) as (client, seen):
        assert client.protocol_version == "2026-07-28"
        valid = await client.call_tool("validate_batch_file", {"path": "data/tickets.jsonl"})
        in_cwd = await client.call_tool("validate_batch_file", {"path": str(elsewhere / "tickets.jsonl")})
        submitted = await client.call_tool("submit_batch", {"path": str(workdir / "data" / "tickets.jsonl")})
        assert not submitted.is_error, submitted.content[0].text
        batch_id = submitted.structured_content["batch"]["batch_id"]
        await finished(client, batch_id)
        outside = await client.call_tool("download_batch_results",
                                         {"batch_id": batch_id, "dest_dir": str(elsewhere)})
        downloaded = await client.call_tool("download_batch_results",
                                            {"batch_id": batch_id, "dest_dir": str(workdir / "results")})
    tickets = (workdir / "data" / "tickets.jsonl").resolve()
    assert not valid.is_error and valid.structured_content["path"] == str(tickets)
    assert "outside the allowed folders" in refusal(in_cwd)
    assert "outside the allowed folders" in refusal(outside)
    assert list(elsewhere.iterdir()) == [elsewhere / "tickets.jsonl"]
    assert not downloaded.is_error, downloaded.content[0].text
    assert Path(downloaded.structured_content["output_path"]).parent == (workdir / "results").resolve()
    # nothing asked of the client or sent to it beside the answers: the logs went to stderr
    assert (seen.logs, seen.samplings, seen.roots_asked) == ([], [], 0)
    assert "notifications/message" not in seen.notifications
    logs = stderr.read_text()
    assert " DEBUG " in logs and "batch_mcp" in logs, logs[-2000:]


async def test_a_2025_client_with_roots_still_narrows_the_folders(sandbox: SandboxServer, workdir: Path,
                                                                  tmp_path: Path) -> None:
    """The 2025-11-25 handshake with the roots capability: the server asks for the roots, and a root inside the
    configured folder narrows it (relative paths start there); the server still logs only to stderr."""
    inner = workdir / "inner"
    inner.mkdir()
    shutil.copyfile(workdir / "data" / "tickets.jsonl", inner / "tickets.jsonl")
    env = {**server_env(sandbox, workdir), "BATCH_MCP_LOG_LEVEL": "DEBUG"}
    stderr = tmp_path / "stderr.txt"
    async with connected(env, cwd=workdir, mode="legacy", stderr=stderr, roots=[inner]) as (client, seen):
        assert client.protocol_version == "2025-11-25"
        relative = await client.call_tool("validate_batch_file", {"path": "tickets.jsonl"})
        beside = await client.call_tool("validate_batch_file", {"path": str(workdir / "data" / "tickets.jsonl")})
    assert not relative.is_error and relative.structured_content["path"] == str((inner / "tickets.jsonl").resolve())
    assert "outside the allowed folders" in refusal(beside)
    assert seen.roots_asked >= 1
    assert (seen.logs, seen.samplings) == ([], [])
    assert "notifications/message" not in seen.notifications
    assert " DEBUG " in stderr.read_text()
