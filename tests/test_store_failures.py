"""A job store that goes away or cannot be used: the server notices, recreates what it can, and otherwise
starts anyway and explains on every call (path, cause, fix) instead of dying with a traceback."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, MCPError
from mcp.client.stdio import StdioServerParameters, stdio_client

from batch_mcp.sandbox import SandboxServer
from batch_mcp.store import SCHEMA_VERSION, STORE_FILENAME, JobStore

from conftest import mcp_session, settings_for
from test_stdio import server_env

SUBMIT = {"path": "data/tickets.jsonl"}


def jobs_in(sandbox: SandboxServer) -> int:
    return sandbox.sandbox.stats()["jobs"]


def answer(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content[0].text
    return result.structured_content


def tracked(resource: Any) -> set[str]:
    """The jobs batch://jobs lists: every one is from this server's job store."""
    return {job["batch_id"] for job in json.loads(resource.contents[0].text)["jobs"]}


async def test_a_state_folder_deleted_while_serving_forgets_nothing(sandbox: SandboxServer, workdir: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """Deleted mid-session, then a submit, then a restart: the same file still makes one job, and the jobs
    from before and after the deletion are both still known."""
    settings = settings_for(sandbox, workdir)
    before = jobs_in(sandbox)
    async with mcp_session(settings) as (client, _):
        earlier = answer(await client.call_tool("submit_batch", {"path": "data/reviews-anthropic.jsonl"}))
        shutil.rmtree(settings.state_dir)
        submitted = answer(await client.call_tool("submit_batch", SUBMIT))
    async with mcp_session(settings) as (client, _):
        again = answer(await client.call_tool("submit_batch", SUBMIT))
        known = tracked(await client.read_resource("batch://jobs"))
    assert again["reused_existing_job"] and again["batch"]["batch_id"] == submitted["batch"]["batch_id"]
    assert {earlier["batch"]["batch_id"], submitted["batch"]["batch_id"]} <= known
    assert jobs_in(sandbox) == before + 2
    assert "was deleted while the server ran" in caplog.text  # and said so


async def test_a_store_file_replaced_while_serving_is_refused_then_recovered(sandbox: SandboxServer,
                                                                            workdir: Path) -> None:
    settings = settings_for(sandbox, workdir)
    store_file = settings.state_dir / STORE_FILENAME
    async with mcp_session(settings) as (client, _):
        earlier = answer(await client.call_tool("submit_batch", {"path": "data/reviews-anthropic.jsonl"}))
        store_file.unlink()
        store_file.write_bytes(b"\x00garbage, not SQLite\n" * 200)
        before = jobs_in(sandbox)
        refused = await client.call_tool("submit_batch", SUBMIT)
        assert refused.is_error and jobs_in(sandbox) == before  # nothing uploaded, nothing created
        text = refused.content[0].text
        assert str(store_file) in text and "another file was put in its place" in text and "Move that file" in text
        store_file.rename(store_file.with_name("moved-aside"))  # what the message says to do
        submitted = answer(await client.call_tool("submit_batch", SUBMIT))
        assert {earlier["batch"]["batch_id"], submitted["batch"]["batch_id"]} <= tracked(
            await client.read_resource("batch://jobs"))
    assert store_file.with_name("moved-aside").read_bytes().startswith(b"\x00garbage")  # never overwritten


def _garbage(state_dir: Path) -> None:
    state_dir.mkdir(parents=True)
    (state_dir / STORE_FILENAME).write_bytes(b"this is not a database\n" * 100)


def _newer_schema(state_dir: Path) -> None:
    JobStore.open(state_dir).close()
    connection = sqlite3.connect(state_dir / STORE_FILENAME)
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    connection.close()


def _can_unshare() -> bool:
    """A private mount namespace lets a test give the server a read-only or full folder without root."""
    try:
        return subprocess.run(["unshare", "-rm", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


#: Shell run inside the server's own mount namespace, before the server starts, on "$BATCH_MCP_STATE_DIR".
READ_ONLY = 'mkdir -p "$BATCH_MCP_STATE_DIR" && mount --bind "$BATCH_MCP_STATE_DIR" "$BATCH_MCP_STATE_DIR" && ' \
            'mount -o remount,bind,ro "$BATCH_MCP_STATE_DIR" && exec "$@"'
FULL_DISK = 'mkdir -p "$BATCH_MCP_STATE_DIR" && mount -t tmpfs -o size=64k tmpfs "$BATCH_MCP_STATE_DIR" && ' \
            '{ head -c 1048576 /dev/zero > "$BATCH_MCP_STATE_DIR/filler"; exec "$@"; }'
needs_unshare = pytest.mark.skipif(not _can_unshare(), reason="unshare -rm (user and mount namespaces) unavailable")

CASES = {
    "garbage bytes": (_garbage, None, "not a batch-mcp job store"),
    "folder under a regular file": (None, None, "cannot be written (Not a directory)"),
    "newer schema": (_newer_schema, None, "written by a newer batch-mcp"),
    "read-only folder": (None, READ_ONLY, "cannot be written"),
    "full disk": (None, FULL_DISK, "the disk is full"),
}


@pytest.mark.parametrize("case", [pytest.param(name, marks=needs_unshare if CASES[name][1] else [])
                                  for name in CASES])
async def test_an_unusable_store_is_explained_by_every_tool(sandbox: SandboxServer, workdir: Path, case: str) -> None:
    prepare, shell, cause = CASES[case]
    env = server_env(sandbox, workdir)
    if case == "folder under a regular file":
        (workdir.parent / "a-file").write_text("not a folder")
        env["BATCH_MCP_STATE_DIR"] = str(workdir.parent / "a-file" / "state")
    state_dir = Path(env["BATCH_MCP_STATE_DIR"])
    if prepare:
        prepare(state_dir)
    command = [sys.executable, "-m", "batch_mcp", "serve"]
    if shell:
        command = ["unshare", "-rm", "sh", "-c", shell, "sh", *command]
    stderr_path = workdir.parent / "server-stderr.txt"
    before = jobs_in(sandbox)
    with stderr_path.open("w") as stderr:
        params = StdioServerParameters(command=command[0], args=command[1:], env=env, cwd=str(workdir))
        async with Client(stdio_client(params, errlog=stderr)) as client:
            refused = [await client.call_tool(tool, SUBMIT) for tool in ("submit_batch", "upload_batch_file")]
            with pytest.raises(MCPError) as listing:
                await client.read_resource("batch://jobs")
            checked = await client.call_tool("validate_batch_file", SUBMIT)  # needs no store: still works
    assert str(state_dir / STORE_FILENAME) in str(listing.value) and cause in str(listing.value)
    for result in refused:
        text = result.content[0].text
        assert result.is_error and str(state_dir / STORE_FILENAME) in text and cause in text, text
        assert "BATCH_MCP_STATE_DIR" in text
    assert answer(checked)["valid"] is True
    assert jobs_in(sandbox) == before
    logged = stderr_path.read_text()
    assert "Traceback" not in logged
    assert [line for line in logged.splitlines() if str(state_dir / STORE_FILENAME) in line and cause in line]
