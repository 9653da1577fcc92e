"""Which folders the file tools may reach: the working directory only when it is a sensible default, and
client roots that narrow the configured folders but never widen them (and count for nothing over HTTP).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import ListRootsResult, Root
from test_http_transport import http_server_process

from batch_mcp.config import Settings
from batch_mcp.sandbox import SandboxServer
from batch_mcp.server import Transport

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


# --- Client roots --------------------------------------------------------------------------------------

def offering(*folders: Path | str) -> Any:
    """A list_roots_callback that offers ``folders`` (paths or ready-made URIs)."""

    async def on_roots(context: Any) -> ListRootsResult:
        return ListRootsResult(roots=[Root(uri=f if isinstance(f, str) else f.as_uri(), name="root")
                                      for f in folders])

    return on_roots


@pytest.fixture
def layout(workdir: Path, tmp_path: Path) -> dict[str, Path]:
    """The same valid file inside the allowed folder, in a sub-folder of it, and outside it."""
    tickets = workdir / "data" / "tickets.jsonl"
    places = {"inside": tickets, "narrow": workdir / "inner" / "tickets.jsonl",
              "outside": tmp_path / "outside" / "tickets.jsonl"}
    for place in ("narrow", "outside"):
        places[place].parent.mkdir()
        shutil.copyfile(tickets, places[place])
    return places


async def readable(client: Client, layout: dict[str, Path]) -> dict[str, str]:
    """Per place, "read" if its file could be validated, else the refusal (checked once the session is closed)."""
    answers = {}
    for place, path in layout.items():
        result = await client.call_tool("validate_batch_file", {"path": str(path)})
        ok = not result.is_error and result.structured_content["requests"] == 300
        answers[place] = "read" if ok else text_of(result)
    return answers


def assert_reads(answers: dict[str, str], *places: str) -> None:
    for place, answer in answers.items():
        if place in places:
            assert answer == "read", (place, answer)
        else:
            assert "outside the allowed folders" in answer, (place, answer)


@pytest.mark.parametrize("mode", ERAS)
async def test_a_root_of_the_whole_disk_reaches_nothing_outside(sandbox: SandboxServer, workdir: Path,
                                                                layout: dict[str, Path], tmp_path: Path,
                                                                mode: str) -> None:
    home = tmp_path / "home"
    key = private_key_in(home)
    async with mcp_session(settings_for(sandbox, workdir), mode=mode,
                           list_roots_callback=offering("file:///", home)) as (client, _):
        answers = await readable(client, layout)
        prepared = await client.call_tool("prepare_batch_file", {"source": str(key), "prompt": "{text}",
                                                                 "model": "gpt-4o-mini"})
    assert_reads(answers, "inside", "narrow")
    assert prepared.is_error and not leaked(prepared), text_of(prepared)


@pytest.mark.parametrize("mode", ERAS)
async def test_a_root_inside_the_allowed_folder_narrows_to_it(sandbox: SandboxServer, workdir: Path,
                                                              layout: dict[str, Path], mode: str) -> None:
    """Relative paths then start at the root: it is the client's project folder."""
    async with mcp_session(settings_for(sandbox, workdir), mode=mode,
                           list_roots_callback=offering(workdir / "inner")) as (client, _):
        answers = await readable(client, layout)
        relative = await client.call_tool("validate_batch_file", {"path": "tickets.jsonl"})
    assert_reads(answers, "narrow")
    assert not relative.is_error and relative.structured_content["path"] == str(layout["narrow"].resolve())


async def test_roots_elsewhere_are_ignored(sandbox: SandboxServer, workdir: Path, layout: dict[str, Path]) -> None:
    roots = offering(layout["outside"].parent, "file://fileserver/share")
    async with mcp_session(settings_for(sandbox, workdir), list_roots_callback=roots) as (client, _):
        answers = await readable(client, layout)
    assert_reads(answers, "inside", "narrow")


@pytest.mark.parametrize("mode", ERAS)
@pytest.mark.parametrize("transport", ["streamable-http", "sse"])
async def test_roots_count_for_nothing_over_http(sandbox: SandboxServer, workdir: Path, layout: dict[str, Path],
                                                 transport: Transport, mode: str) -> None:
    """Any local process can talk to a loopback HTTP server without a token: what it claims as roots
    neither widens access (file:///) nor narrows it (a root inside). A real server process, so the
    roots request could really reach the client."""
    seen = []
    with http_server_process(server_env(sandbox, workdir), workdir, transport) as (base, _):
        for roots in (offering("file:///"), offering(workdir / "inner")):
            async with httpx2.AsyncClient(timeout=60) as http:
                target = (sse_client(f"{base}/sse") if transport == "sse"
                          else streamable_http_client(f"{base}/mcp", http_client=http))
                async with Client(target, mode=mode, list_roots_callback=roots) as client:
                    seen.append(await readable(client, layout))
    for answers in seen:
        assert_reads(answers, "inside", "narrow")
