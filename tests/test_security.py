"""What the server may touch and what it may say, through the MCP tools.

Files: only inside the allowed folders, with paths resolved (``~``, ``..``, symlinks) before the check,
and writes (downloads, prepared and retry files, split parts) that never go through a link planted in the
folder, nor replace a file unasked. Secrets: the API token never
appears in any tool result, resource, prompt, log line or demo output, presigned URLs are never logged
with their signatures, and only API requests carry the token.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.client.stdio import stdio_client

from batch_mcp.cli import build_parser, serve_settings
from batch_mcp.sandbox import SandboxConfig, SandboxServer

from conftest import fast_config, mcp_session, settings_for
from test_stdio import server_env, stdio_server

TOKEN = "tok-SECRET-5f1c2e9ad7"
#: A URL followed by a query string: how a presigned signature would show up in a log.
SIGNED_URL = re.compile(r"https?://[^\s\"'<>]*\?")
STORAGE_OPERATIONS = {"upload", "download"}


@pytest.fixture(scope="module")
def secret_sandbox() -> Iterator[SandboxServer]:
    """A sandbox whose token is distinctive enough to search every output for."""
    with SandboxServer(fast_config(token=TOKEN)) as server:
        yield server


def text_of(result: Any) -> str:
    """Everything a tool result shows the agent: its text blocks and its structured content."""
    texts = [block.text for block in result.content if hasattr(block, "text")]
    return "\n".join([*texts, json.dumps(result.structured_content or {})])


# --- File access ---------------------------------------------------------------------------------------

ESCAPES = ["absolute", "dot-dot", "symlinked file", "symlinked folder", "sibling with a shared prefix", "tilde"]


def escaping_path(escape: str, workdir: Path, outside: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A path, as an agent would pass it, that ends up at ``outside/tickets.jsonl`` (or a sibling's copy)."""
    match escape:
        case "absolute":
            return str(outside / "tickets.jsonl")
        case "dot-dot":
            return f"data/../../{outside.name}/tickets.jsonl"
        case "symlinked file":
            (workdir / "data" / "link.jsonl").symlink_to(outside / "tickets.jsonl")
            return "data/link.jsonl"
        case "symlinked folder":
            (workdir / "data" / "elsewhere").symlink_to(outside, target_is_directory=True)
            return "data/elsewhere/tickets.jsonl"
        case "sibling with a shared prefix":  # /x/work-evil starts with the string /x/work
            sibling = workdir.with_name(workdir.name + "-evil")
            shutil.copytree(outside, sibling)
            return str(sibling / "tickets.jsonl")
        case "tilde":
            monkeypatch.setenv("HOME", str(outside))
            return "~/tickets.jsonl"
    raise ValueError(escape)


async def test_paths_leading_outside_are_refused(secret_sandbox: SandboxServer, workdir: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 subtests: pytest.Subtests) -> None:
    """A valid file outside the allowed folder, reached six ways: each is refused and nothing is sent."""
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copyfile(workdir / "data" / "tickets.jsonl", outside / "tickets.jsonl")
    async with mcp_session(settings_for(secret_sandbox, workdir)) as (client, _):
        for escape in ESCAPES:
            path = escaping_path(escape, workdir, outside, monkeypatch)
            for tool in ("validate_batch_file", "submit_batch"):
                with subtests.test(f"{escape} ({tool})"):
                    before = secret_sandbox.sandbox.stats()["files"]
                    result = await client.call_tool(tool, {"path": path})
                    message = text_of(result)
                    assert result.is_error, message
                    assert "outside the allowed folders" in message and str(workdir.resolve()) in message
                    assert "--allow-dir" in message and "BATCH_MCP_ALLOWED_DIRS" in message
                    assert secret_sandbox.sandbox.stats()["files"] == before


async def test_paths_resolving_inside_are_read(secret_sandbox: SandboxServer, workdir: Path,
                                               monkeypatch: pytest.MonkeyPatch, subtests: pytest.Subtests) -> None:
    """``~`` is expanded and links are followed before the check, so paths that end up inside work."""
    monkeypatch.setenv("HOME", str(workdir))
    (workdir / "data" / "inner-link.jsonl").symlink_to(workdir / "data" / "tickets.jsonl")
    async with mcp_session(settings_for(secret_sandbox, workdir)) as (client, _):
        for path in ("~/data/tickets.jsonl", "data/../data/tickets.jsonl", "data/inner-link.jsonl",
                     str(workdir / "data" / "tickets.jsonl")):
            with subtests.test(path):
                result = await client.call_tool("validate_batch_file", {"path": path})
                assert not result.is_error, text_of(result)
                assert result.structured_content["requests"] == 300


@pytest.mark.parametrize("source", ["--allow-dir flags", "BATCH_MCP_ALLOWED_DIRS", "working directory"])
async def test_allowed_folders_come_from_flags_environment_or_working_directory(
        tmp_path: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch, source: str) -> None:
    first, second, other = (tmp_path / name for name in ("first", "second", "other"))
    for folder in (first, second, other):
        folder.mkdir()
        shutil.copyfile(workdir / "data" / "tickets.jsonl", folder / "tickets.jsonl")
    monkeypatch.setenv("BATCH_MCP_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("BATCH_MCP_ALLOWED_DIRS", raising=False)
    flags = ["serve"]
    if source == "--allow-dir flags":
        flags += ["--allow-dir", str(first), "--allow-dir", str(second)]
    elif source == "BATCH_MCP_ALLOWED_DIRS":
        monkeypatch.setenv("BATCH_MCP_ALLOWED_DIRS", os.pathsep.join([str(first), str(second)]))
    else:
        monkeypatch.chdir(second)
    settings = serve_settings(build_parser().parse_args(flags))
    expected = [second] if source == "working directory" else [first, second]
    assert settings.effective_allowed_dirs() == [p.resolve() for p in expected]
    async with mcp_session(settings) as (client, _):
        allowed = await client.call_tool("validate_batch_file", {"path": str(second / "tickets.jsonl")})
        refused = await client.call_tool("validate_batch_file", {"path": str(other / "tickets.jsonl")})
    assert not allowed.is_error, text_of(allowed)
    assert refused.is_error and str(second.resolve()) in text_of(refused)


async def _finished_batch(client: Client) -> str:
    submitted = await client.call_tool("submit_batch", {"path": "data/tickets.jsonl"})
    batch_id = submitted.structured_content["batch"]["batch_id"]
    waited = await client.call_tool("wait_for_batch", {"batch_id": batch_id, "timeout_s": 30,
                                                       "poll_interval_s": 0.05})
    assert waited.structured_content["batch"]["status"] == "completed", text_of(waited)
    return batch_id


async def test_downloads_write_only_into_allowed_folders(secret_sandbox: SandboxServer, workdir: Path,
                                                         tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (workdir / "link-out").symlink_to(outside, target_is_directory=True)
    async with mcp_session(settings_for(secret_sandbox, workdir)) as (client, _):
        batch_id = await _finished_batch(client)
        for dest_dir in (str(outside), "../outside", "link-out", "link-out/nested"):
            result = await client.call_tool("download_batch_results", {"batch_id": batch_id, "dest_dir": dest_dir})
            assert result.is_error and "outside the allowed folders" in text_of(result), dest_dir
    assert list(outside.iterdir()) == []


LINKS = pytest.mark.parametrize("target_exists", [True, False], ids=["link to a file", "dangling link"])


def plant_link(link: Path, victim: Path, target_exists: bool) -> Callable[[], None]:
    """Plant ``link`` -> ``victim`` (outside); return a check that the victim was left exactly as it was."""
    if target_exists:
        victim.write_text("precious\n")
    link.symlink_to(victim)

    def untouched() -> None:
        assert (victim.read_text() == "precious\n") if target_exists else not victim.exists()

    return untouched


async def test_downloads_never_overwrite_unless_asked(secret_sandbox: SandboxServer, workdir: Path) -> None:
    async with mcp_session(settings_for(secret_sandbox, workdir)) as (client, _):
        batch_id = await _finished_batch(client)
        first = await client.call_tool("download_batch_results", {"batch_id": batch_id, "dest_dir": "out"})
        output = Path(first.structured_content["output_path"])
        output.write_text("the user's edits\n")
        again = await client.call_tool("download_batch_results", {"batch_id": batch_id, "dest_dir": "out"})
        assert again.is_error and "overwrite=true" in text_of(again) and str(output) in text_of(again)
        assert output.read_text() == "the user's edits\n"
        replaced = await client.call_tool("download_batch_results", {"batch_id": batch_id, "dest_dir": "out",
                                                                     "overwrite": True})
        assert not replaced.is_error and output.read_text() != "the user's edits\n"


@LINKS
async def test_downloads_never_write_through_planted_links(secret_sandbox: SandboxServer, workdir: Path,
                                                           tmp_path: Path, target_exists: bool) -> None:
    """Links planted in the folder, where result files (or their partial files) will go, point outside:
    the download is refused, even with overwrite=true, and neither the links nor their targets change."""
    outside = tmp_path / "outside"
    outside.mkdir()
    async with mcp_session(settings_for(secret_sandbox, workdir)) as (client, _):
        batch_id = await _finished_batch(client)
        probe = await client.call_tool("download_batch_results", {"batch_id": batch_id, "dest_dir": "probe"})
        assert not probe.is_error, text_of(probe)
        names = sorted(p.name for p in (workdir / "probe").iterdir())
        trap = workdir / "trap"
        trap.mkdir()
        checks = [plant_link(trap / name, outside / name, target_exists)
                  for name in names + [f"{name}.part" for name in names]]
        for overwrite in (False, True):
            refused = await client.call_tool("download_batch_results", {"batch_id": batch_id, "dest_dir": "trap",
                                                                        "overwrite": overwrite})
            assert refused.is_error and "is a symbolic link" in text_of(refused), text_of(refused)
    assert all((trap / name).is_symlink() for name in names)
    for untouched in checks:
        untouched()


async def test_split_parts_are_written_only_beside_their_input(secret_sandbox: SandboxServer, workdir: Path,
                                                               tmp_path: Path) -> None:
    """A file over the per-batch limit is split into ``<stem>.parts/`` beside it: a link planted under that
    name must not send the parts (and their upload) to a folder outside the allowed ones."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (workdir / "data" / "tickets.parts").symlink_to(outside, target_is_directory=True)
    before = secret_sandbox.sandbox.stats()["uploaded_files"]
    async with mcp_session(settings_for(secret_sandbox, workdir, max_requests=100)) as (client, _):
        result = await client.call_tool("submit_batch", {"path": "data/tickets.jsonl"})
    assert result.is_error and "outside the allowed folders" in text_of(result), text_of(result)
    assert list(outside.iterdir()) == [] and secret_sandbox.sandbox.stats()["uploaded_files"] == before


@LINKS
@pytest.mark.parametrize("planted", ["output", "partial output"])
async def test_prepared_files_are_written_only_inside(secret_sandbox: SandboxServer, workdir: Path, tmp_path: Path,
                                                      planted: str, target_exists: bool) -> None:
    """prepare_batch_file writes ``<source>.batch.jsonl`` beside its source, through a partial file: a link
    planted under either name never leads the write outside, even with overwrite=true."""
    (workdir / "data" / "reviews.csv").write_text("id,review\nr-1,Boils fast.\n")
    output = workdir / "data" / "reviews.batch.jsonl"
    link = output if planted == "output" else output.with_name(output.name + ".part")
    untouched = plant_link(link, tmp_path / "victim.jsonl", target_exists)
    async with mcp_session(settings_for(secret_sandbox, workdir)) as (client, _):
        result = await client.call_tool("prepare_batch_file", {"source": "data/reviews.csv", "model": "gpt-4o-mini",
                                                               "prompt": "Summarise: {review}", "overwrite": True})
    if planted == "output":
        assert result.is_error and "is a symbolic link" in text_of(result), text_of(result)
    else:
        assert not result.is_error and output.is_file() and not output.is_symlink(), text_of(result)
    untouched()


@LINKS
async def test_retry_files_are_written_only_inside(secret_sandbox: SandboxServer, workdir: Path, tmp_path: Path,
                                                   target_exists: bool) -> None:
    """retry_failed_requests writes ``<input>.retry-<id>.jsonl`` beside the input: a link planted there
    is refused."""
    async with mcp_session(settings_for(secret_sandbox, workdir)) as (client, _):
        batch_id = await _finished_batch(client)
        stem = batch_id.replace(":", "_")
        untouched = plant_link(workdir / "data" / f"tickets.retry-{stem}.jsonl", tmp_path / "victim.jsonl",
                               target_exists)
        result = await client.call_tool("retry_failed_requests", {"batch_id": batch_id})
    assert result.is_error and "is a symbolic link" in text_of(result), text_of(result)
    untouched()


# --- Secrets -------------------------------------------------------------------------------------------

async def run_every_tool(client: Client, authorised: bool = True) -> list[str]:
    """Call every tool, read every resource and prompt; return all the text the agent would see.
    Unauthorised (a wrong token), only the calls that reach the API and fail are made."""
    seen: list[str] = []

    async def call(tool: str, **arguments: Any) -> Any:
        result = await client.call_tool(tool, arguments)
        seen.append(text_of(result))
        return result

    await call("validate_batch_file", path="data/tickets.jsonl")
    if not authorised:
        await call("get_batch", batch_id="b-1")
        await call("submit_batch", path="data/tickets.jsonl")
        return seen
    upload = (await call("upload_batch_file", path="data/reviews-anthropic.jsonl")).structured_content
    await call("create_batch", file_id=upload["file_id"], provider="anthropic",
               metadata=[{"key": "run", "value": "secrets"}])
    submitted = await call("submit_batch", path="data/tickets.jsonl", new=True)
    batch_id = submitted.structured_content["batch"]["batch_id"]
    await call("get_batch", batch_id=batch_id)
    await call("wait_for_batch", batch_id=batch_id, timeout_s=30, poll_interval_s=0.05)
    await call("list_batches", limit=5)
    await call("cancel_batch", batch_id=batch_id)  # a 409: an API error message
    await call("get_batch_results", batch_id=batch_id)
    await call("download_batch_results", batch_id=batch_id, dest_dir="secrets-test", overwrite=True)
    await call("get_batch", batch_id="00000000-0000-0000-0000-000000000000")  # a 404
    for uri in ("batch://jobs", f"batch://jobs/{batch_id}"):
        seen.extend(content.text for content in (await client.read_resource(uri)).contents)
    prompts = {"run_batch": {"path": "data/tickets.jsonl"}, "summarise_batch": {"batch_id": batch_id}}
    for name, arguments in prompts.items():
        seen.extend(message.content.text for message in (await client.get_prompt(name, arguments)).messages)
    return seen


def assert_no_secrets(text: str, token: str = TOKEN) -> None:
    assert token not in text
    assert not SIGNED_URL.search(text), SIGNED_URL.search(text)


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_token_never_reaches_results_resources_prompts_or_logs(
        secret_sandbox: SandboxServer, workdir: Path, caplog: pytest.LogCaptureFixture, mode: str) -> None:
    caplog.set_level(logging.DEBUG)
    async with mcp_session(settings_for(secret_sandbox, workdir), mode=mode) as (client, _):
        seen = await run_every_tool(client)
    assert all(TOKEN not in text for text in seen)
    assert any(SIGNED_URL.search(text) for text in seen)  # get_batch_results hands the agent its links...
    assert caplog.records and any(r.name.startswith("httpx2") for r in caplog.records)
    assert_no_secrets(caplog.text)  # ... but no log line carries one


async def test_a_wrong_token_is_never_echoed(secret_sandbox: SandboxServer, workdir: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    wrong = "tok-SECRET-wrong-4c8e1b"
    caplog.set_level(logging.DEBUG)
    async with mcp_session(settings_for(secret_sandbox, workdir, token=wrong)) as (client, _):
        seen = await run_every_tool(client, authorised=False)
    assert "401" in seen[-1] and "MODEL_ACCESS_KEY" in seen[-1]
    for text in (*seen, caplog.text):
        assert_no_secrets(text, wrong)


async def test_the_token_goes_only_to_the_api(secret_sandbox: SandboxServer, workdir: Path) -> None:
    """The upload PUT and the result downloads go to presigned storage URLs, without the Authorization header."""
    log = secret_sandbox.sandbox.requests
    start = len(log)
    async with mcp_session(settings_for(secret_sandbox, workdir)) as (client, _):
        batch_id = await _finished_batch(client)
        result = await client.call_tool("download_batch_results", {"batch_id": batch_id, "dest_dir": "auth-test"})
        assert not result.is_error, text_of(result)
    seen = log[start:]
    storage = [r for r in seen if r.operation in STORAGE_OPERATIONS]
    api = [r for r in seen if r.operation not in STORAGE_OPERATIONS]
    assert {r.operation for r in storage} == STORAGE_OPERATIONS
    assert not any(r.authorization for r in storage)
    assert api and all(r.authorization for r in api)


async def test_stdio_server_log_at_debug_has_no_secrets(secret_sandbox: SandboxServer, workdir: Path) -> None:
    env = {**server_env(secret_sandbox, workdir), "BATCH_MCP_LOG_LEVEL": "DEBUG"}
    stderr_path = workdir.parent / "server-stderr.txt"
    with stderr_path.open("w") as stderr:
        async with Client(stdio_client(stdio_server(env, cwd=workdir), errlog=stderr), mode="legacy") as client:
            seen = await run_every_tool(client)
    logged = stderr_path.read_text()
    assert "DEBUG" in logged and all(TOKEN not in text for text in seen)
    assert_no_secrets(logged)


def test_demo_output_has_no_token_or_signed_url(tmp_path: Path) -> None:
    """The demo, its sandbox and its server all log at DEBUG into the captured output."""
    env = {**os.environ, "BATCH_MCP_LOG_LEVEL": "DEBUG"}
    done = subprocess.run([sys.executable, "-m", "batch_mcp", "-v", "demo", "--workdir", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert "every step passed" in done.stdout and "DEBUG" in done.stderr
    for step in ("1. validate_batch_file", "same job: True", "300/300", "completed", "batch://jobs lists"):
        assert step in done.stdout, step
    assert_no_secrets(output, SandboxConfig().token)
