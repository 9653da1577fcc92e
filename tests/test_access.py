"""Which folders the file tools may reach: the working directory only when it is a sensible default."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.client.stdio import stdio_client

from batch_mcp.config import Settings
from batch_mcp.sandbox import SandboxServer

from conftest import mcp_session, settings_for
from test_stdio import server_env, stdio_server

PRIVATE_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
ERAS = ["auto", "legacy"]


def text_of(result: Any) -> str:
    return result.content[0].text


def private_key_in(home: Path) -> Path:
    key = home / ".ssh" / "id_ed25519"
    key.parent.mkdir(parents=True)
    key.write_text(PRIVATE_KEY)
    return key


def leaked(result: Any) -> bool:
    return not result.is_error or "BEGIN OPENSSH" in text_of(result) or "b3BlbnNzaC1rZXkt" in text_of(result)


# --- The implicit default ------------------------------------------------------------------------------

@pytest.mark.parametrize("started_in", ["/", "home"])
async def test_a_server_started_in_a_broad_folder_allows_nothing(sandbox: SandboxServer, workdir: Path,
                                                                 tmp_path: Path, started_in: str) -> None:
    """An MCP host that starts the server in / (or $HOME) without allowing a folder: every file tool says how
    to allow one, nothing is read, and the start-up log says why."""
    home = tmp_path / "home"
    key = private_key_in(home)
    env = {**server_env(sandbox, workdir), "HOME": str(home)}
    del env["BATCH_MCP_ALLOWED_DIRS"]
    cwd = Path("/") if started_in == "/" else home
    stderr_path = tmp_path / "stderr.txt"
    with stderr_path.open("w") as stderr:
        async with Client(stdio_client(stdio_server(env, cwd=cwd), errlog=stderr)) as client:
            prepared = await client.call_tool("prepare_batch_file", {"source": str(key), "prompt": "{text}",
                                                                     "model": "gpt-4o-mini"})
            validated = await client.call_tool("validate_batch_file", {"path": str(workdir / "data" / "tickets.jsonl")})
    for result in (prepared, validated):
        assert result.is_error and not leaked(result), text_of(result)
        assert "--allow-dir" in text_of(result) and "BATCH_MCP_ALLOWED_DIRS" in text_of(result)
    assert sorted(p.name for p in key.parent.iterdir()) == ["id_ed25519"]
    logged = [line for line in stderr_path.read_text().splitlines() if "allowed folders" in line]
    assert len(logged) == 1 and "too broad" in logged[0] and "--allow-dir" in logged[0], logged


async def test_results_have_nowhere_to_go_without_an_allowed_folder(sandbox: SandboxServer, workdir: Path,
                                                                   tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Started in the home folder (a stand-in: before, one started in / wrote /batch-results)."""
    home = tmp_path / "home"
    home.mkdir()
    async with mcp_session(settings_for(sandbox, workdir)) as (client, _):
        submitted = await client.call_tool("submit_batch", {"path": "data/tickets.jsonl", "new": True})
        batch_id = submitted.structured_content["batch"]["batch_id"]
        waited = await client.call_tool("wait_for_batch", {"batch_id": batch_id, "timeout_s": 60,
                                                           "poll_interval_s": 0.05})
    assert waited.structured_content["batch"]["status"] == "completed"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(home)
    async with mcp_session(settings_for(sandbox, workdir, allowed_dirs=[])) as (client, _):
        downloaded = await client.call_tool("download_batch_results", {"batch_id": batch_id})
    assert downloaded.is_error and "BATCH_MCP_ALLOWED_DIRS" in text_of(downloaded), text_of(downloaded)
    assert list(home.iterdir()) == []


@pytest.mark.parametrize("allowed", ["workdir", "/"])
async def test_an_explicit_allowed_folder_is_respected_wherever_the_server_starts(
        sandbox: SandboxServer, workdir: Path, tmp_path: Path, allowed: str) -> None:
    folder = workdir if allowed == "workdir" else Path("/")
    env = {**server_env(sandbox, workdir), "BATCH_MCP_LOG_LEVEL": "INFO"}
    del env["BATCH_MCP_ALLOWED_DIRS"]
    stderr_path = tmp_path / "stderr.txt"
    with stderr_path.open("w") as stderr:
        async with Client(stdio_client(stdio_server(env, "--allow-dir", str(folder), cwd=Path("/")),
                                       errlog=stderr)) as client:
            result = await client.call_tool("validate_batch_file", {"path": str(workdir / "data" / "tickets.jsonl")})
    assert not result.is_error, text_of(result)
    assert result.structured_content["requests"] == 300
    logged = [line for line in stderr_path.read_text().splitlines() if "allowed folders" in line]
    assert len(logged) == 1 and logged[0].endswith(f"allowed folders: {folder.resolve()}"), logged


@pytest.mark.parametrize("folder", ["/", "/etc", "/usr", "/tmp", "/var", "home", "above home"])
def test_broad_working_directories_are_not_allowed_implicitly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             folder: str) -> None:
    home = tmp_path / "users" / "me"
    home.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("BATCH_MCP_ALLOWED_DIRS", raising=False)
    monkeypatch.chdir({"home": home, "above home": home.parent}.get(folder, folder))
    assert Settings().effective_allowed_dirs() == []
    (home / "project").mkdir()
    monkeypatch.chdir(home / "project")
    assert Settings().effective_allowed_dirs() == [(home / "project").resolve()]
