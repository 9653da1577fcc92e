"""Every file the server writes is new or asked for: never through a link, never over a file unasked, and
nothing deleted that the server did not make (issue 9, items 5 to 7).

The retry, prepare, split, download and sandbox-store paths are driven through the MCP tools; the one
writer they share, ``NewFile``, is also checked on its own against the races a tool call cannot stage.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from batch_mcp.config import Settings
from batch_mcp.sandbox import SandboxServer
from batch_mcp.services.workspace import NewFile, OutputTaken

from conftest import fast_config, mcp_session, settings_for


@pytest.fixture(scope="module")
def flaky() -> Iterator[SandboxServer]:
    """A sandbox where one request in five fails, so every finished job has something to retry."""
    with SandboxServer(fast_config(failure_rate=0.2)) as server:
        yield server


@pytest.fixture(scope="module")
def reliable() -> Iterator[SandboxServer]:
    with SandboxServer(fast_config(failure_rate=0.0)) as server:
        yield server


def text_of(result: Any) -> str:
    return "\n".join(block.text for block in result.content if hasattr(block, "text"))


async def call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, text_of(result)
    return result.structured_content


async def finished(client: Client, path: str = "data/tickets.jsonl", **submit: Any) -> str:
    batch_id = (await call(client, "submit_batch", path=path, **submit))["batch"]["batch_id"]
    waited = await call(client, "wait_for_batch", batch_id=batch_id, timeout_s=60, poll_interval_s=0.05)
    assert waited["batch"]["status"] == "completed", waited
    return batch_id


def dead_pid() -> int:
    """The pid of a process that has just exited."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# --- retry_failed_requests and prepare_batch_file (item 5) ---------------------------------------------

async def test_a_retry_file_linked_to_the_input_leaves_the_input_whole(flaky: SandboxServer, workdir: Path) -> None:
    """The reported case: the retry file's name is a link to the input. Followed, it truncated the input,
    deleted it, and answered "Nothing to retry" although a fifth of the requests had failed."""
    source = workdir / "data" / "tickets.jsonl"
    original = source.read_bytes()
    async with mcp_session(settings_for(flaky, workdir)) as (client, _):
        batch_id = await finished(client)
        link = source.with_name(f"tickets.retry-{batch_id.replace(':', '_')}.jsonl")
        link.symlink_to(source)
        result = await client.call_tool("retry_failed_requests", {"batch_id": batch_id})
        assert result.is_error and "is a symbolic link" in text_of(result), text_of(result)
        assert source.read_bytes() == original and link.is_symlink()
        link.unlink()  # once the link is gone, the retry runs: the failures were there all along
        retried = await call(client, "retry_failed_requests", batch_id=batch_id)
    assert retried["retried"] > 0 and source.read_bytes() == original


@pytest.mark.parametrize("tool", ["retry_failed_requests", "prepare_batch_file"])
async def test_a_link_to_another_file_in_the_folder_is_never_written_through(
        flaky: SandboxServer, workdir: Path, tool: str) -> None:
    """A link inside the allowed folder passes the folder check; it must still not be followed, even with
    overwrite=true."""
    victim = workdir / "data" / "notes.txt"
    victim.write_text("the user's notes\n")
    (workdir / "data" / "reviews.csv").write_text("id,review\nr-1,Boils fast.\n")
    async with mcp_session(settings_for(flaky, workdir)) as (client, _):
        if tool == "retry_failed_requests":
            batch_id = await finished(client)
            stem = batch_id.replace(":", "_")
            link, arguments = workdir / "data" / f"tickets.retry-{stem}.jsonl", {"batch_id": batch_id}
        else:
            link = workdir / "data" / "reviews.batch.jsonl"
            arguments = {"source": "data/reviews.csv", "model": "gpt-4o-mini", "prompt": "Summarise: {review}",
                         "overwrite": True}
        link.symlink_to(victim)
        result = await client.call_tool(tool, arguments)
    assert result.is_error and "is a symbolic link" in text_of(result), text_of(result)
    assert victim.read_text() == "the user's notes\n" and link.is_symlink()


async def test_nothing_to_retry_deletes_no_file_it_did_not_make(reliable: SandboxServer, workdir: Path) -> None:
    async with mcp_session(settings_for(reliable, workdir)) as (client, _):
        batch_id = await finished(client)
        mine = workdir / "data" / f"tickets.retry-{batch_id.replace(':', '_')}.jsonl"
        mine.write_text("kept by the user\n")
        retried = await call(client, "retry_failed_requests", batch_id=batch_id)
    assert retried["retried"] == 0 and "Nothing to retry" in retried["next_step"]
    assert mine.read_text() == "kept by the user\n"
    assert not list((workdir / "data").glob("*.part"))


async def test_a_retry_file_with_other_content_is_not_replaced(flaky: SandboxServer, workdir: Path) -> None:
    async with mcp_session(settings_for(flaky, workdir)) as (client, _):
        batch_id = await finished(client)
        taken = workdir / "data" / f"tickets.retry-{batch_id.replace(':', '_')}.jsonl"
        taken.write_text("kept by the user\n")
        result = await client.call_tool("retry_failed_requests", {"batch_id": batch_id})
        assert result.is_error and "already exists; move it away" in text_of(result), text_of(result)
        assert taken.read_text() == "kept by the user\n"
        taken.unlink()
        first = await call(client, "retry_failed_requests", batch_id=batch_id)
        again = await call(client, "retry_failed_requests", batch_id=batch_id)  # the same file: kept, same job
    assert again["retry_file"] == first["retry_file"] and again["submitted"]["reused_existing_job"]


async def test_preparing_again_the_same_file_needs_no_overwrite(reliable: SandboxServer, workdir: Path) -> None:
    (workdir / "data" / "reviews.csv").write_text("id,review\nr-1,Boils fast.\n")
    arguments = {"source": "data/reviews.csv", "model": "gpt-4o-mini", "prompt": "Summarise: {review}"}
    async with mcp_session(settings_for(reliable, workdir)) as (client, _):
        first = await call(client, "prepare_batch_file", **arguments)
        again = await call(client, "prepare_batch_file", **arguments)  # nothing would change: nothing replaced
        other = await client.call_tool("prepare_batch_file", {**arguments, "prompt": "Rate: {review}"})
    assert again["path"] == first["path"] and other.is_error and "overwrite=true" in text_of(other)
    assert "Summarise: Boils fast." in Path(first["path"]).read_text()


# --- the writer every tool uses --------------------------------------------------------------------

def write(target: Path, data: bytes, **options: Any) -> None:
    with NewFile(target, **options) as new:
        new.out.write(data)


def test_new_file_is_exclusive_unless_asked(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    write(target, b"one\n")
    inode = target.stat().st_ino
    write(target, b"one\n")  # the same bytes: left as it is
    assert target.stat().st_ino == inode
    with pytest.raises(OutputTaken, match="overwrite=true"):
        write(target, b"two\n")
    assert target.read_bytes() == b"one\n"
    write(target, b"two\n", overwrite=True)
    assert target.read_bytes() == b"two\n" and [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


@pytest.mark.parametrize("overwrite", [False, True])
@pytest.mark.parametrize("when", ["before", "while writing"])
def test_new_file_never_follows_nor_replaces_a_link(tmp_path: Path, overwrite: bool, when: str) -> None:
    victim, target = tmp_path / "victim.txt", tmp_path / "out.jsonl"
    victim.write_text("precious\n")
    if when == "before":
        target.symlink_to(victim)
    with pytest.raises(OutputTaken, match="symbolic link"), NewFile(target, overwrite=overwrite) as new:
        new.out.write(b"result\n")
        if when == "while writing":
            target.symlink_to(victim)
    assert victim.read_text() == "precious\n" and target.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl", "victim.txt"]


def test_an_unfinished_or_discarded_file_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    with pytest.raises(RuntimeError), NewFile(target) as new:
        new.out.write(b"half")
        raise RuntimeError("the download broke")
    with NewFile(target) as new:
        new.out.write(b"nothing worth keeping")
        new.discard()
    assert list(tmp_path.iterdir()) == []


def test_without_hard_links_the_name_is_still_claimed_exclusively(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Some file systems (FAT, some network shares) refuse hard links; this one cannot, so it is told to."""
    def no_hard_links(*_: Any) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_hard_links)
    target = tmp_path / "out.jsonl"
    write(target, b"one\n")
    with pytest.raises(OutputTaken, match="overwrite=true"):
        write(target, b"two\n")
    assert target.read_bytes() == b"one\n" and [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


# --- split parts and partial downloads (item 7) ---------------------------------------------------------

def parts_of(state: Any, group_id: str) -> list[Path]:
    return [s.path for s in state.service.store.group_submissions(group_id)]


async def test_splitting_deletes_no_part_files_it_did_not_make(reliable: SandboxServer, workdir: Path) -> None:
    folder = workdir / "data" / "tickets.parts"
    folder.mkdir()
    theirs = {folder / "part-001.jsonl": "someone else's part\n", folder / "part-009.jsonl": "and another\n"}
    for path, content in theirs.items():
        path.write_text(content)
    source = workdir / "data" / "tickets.jsonl"
    async with mcp_session(settings_for(reliable, workdir, max_requests=100)) as (client, state):
        first = (await call(client, "submit_batch", path="data/tickets.jsonl"))["batch"]["batch_id"]
        assert all(path.read_text() == content for path, content in theirs.items())
        sent = {path: path.read_bytes() for path in parts_of(state, first)}
        again = (await call(client, "submit_batch", path="data/tickets.jsonl", new=True))["batch"]["batch_id"]
        assert parts_of(state, again) == list(sent)  # the same input splits into the same files, kept
        source.write_bytes(b"".join(source.read_bytes().splitlines(keepends=True)[1:]))  # edited by the user
        changed = (await call(client, "submit_batch", path="data/tickets.jsonl"))["batch"]["batch_id"]
        assert not set(parts_of(state, changed)) & set(sent)
    assert all(path.read_text() == content for path, content in theirs.items())
    assert all(path.read_bytes() == content for path, content in sent.items())  # the first jobs' inputs stay


HOLD_A_PARTIAL = """
import sys, time
from pathlib import Path
from batch_mcp.services.workspace import NewFile
with NewFile(Path(sys.argv[1])) as new:
    new.out.write(b"half a download")
    new.out.flush()
    print(new.partial, flush=True)
    time.sleep(600)
"""


async def test_partial_files_a_killed_download_left_are_cleaned_up(reliable: SandboxServer, workdir: Path) -> None:
    """A process writing a result file is killed with SIGKILL; the next download into that folder removes
    its partial file, and partial files another live process may still be writing, or the user's, stay."""
    out = workdir / "out"
    out.mkdir()
    async with mcp_session(settings_for(reliable, workdir)) as (client, _):
        batch_id = await finished(client)
        writer = subprocess.Popen([sys.executable, "-c", HOLD_A_PARTIAL, str(out / f"{batch_id}.output.jsonl")],
                                  stdout=subprocess.PIPE, text=True)
        try:
            killed = Path(writer.stdout.readline().strip())
        finally:
            writer.kill()
            writer.wait()
        assert killed.is_file()  # SIGKILL runs no clean-up
        live = os.getppid()  # a process that runs, and could be another server writing here
        fresh, old = out / f".x.jsonl.aaaaaaaa.batch-mcp-{live}.part", out / f".y.jsonl.bbbbbbbb.batch-mcp-{live}.part"
        dead = out / f".z.jsonl.cccccccc.batch-mcp-{dead_pid()}.part"
        users = out / ".notes.part"
        for path in (fresh, old, dead, users):
            path.write_text("partial\n")
        two_days_ago = time.time() - 2 * 24 * 3600
        os.utime(old, (two_days_ago, two_days_ago))
        await call(client, "download_batch_results", batch_id=batch_id, dest_dir="out")
    assert not killed.exists() and not old.exists() and not dead.exists()
    assert fresh.exists() and users.exists()


# --- the sandbox's store (item 6) -------------------------------------------------------------------

async def test_sandbox_mode_keeps_its_state_in_its_own_folder_and_deletes_nothing(workdir: Path) -> None:
    """`serve --sandbox --state-dir DIR` once deleted DIR/sandbox and everything in it at start-up. Now its
    jobs and their store live on in DIR/sandbox (the next process needs them), and nothing there is removed."""
    state = workdir.parent / "state"
    (state / "sandbox").mkdir(parents=True)
    (state / "sandbox" / "precious.txt").write_text("not the server's\n")
    (state / "jobs.sqlite3").write_text("the real store, not the sandbox's\n")
    another_run = state / f"sandbox.efgh5678.batch-mcp-{os.getppid()}"  # an older release's running sandbox
    another_run.mkdir()
    settings = Settings(sandbox=True, state_dir=state, allowed_dirs=[workdir], poll_interval_s=0.05)
    async with mcp_session(settings) as (client, _):
        submitted = await call(client, "submit_batch", path="data/tickets.jsonl")
    batch_id = submitted["batch"]["batch_id"]
    assert (state / "sandbox" / "jobs.sqlite3").is_file()
    assert (state / "sandbox" / "digitalocean" / "sandbox.sqlite3").is_file()
    async with mcp_session(settings) as (client, _):
        jobs = json.loads((await client.read_resource("batch://jobs")).contents[0].text)
        assert batch_id in {job["batch_id"] for job in jobs["jobs"]}
        assert (await call(client, "get_batch", batch_id=batch_id))["batch_id"] == batch_id
    assert another_run.is_dir()
    assert (state / "sandbox" / "precious.txt").read_text() == "not the server's\n"
    assert (state / "jobs.sqlite3").read_text() == "the real store, not the sandbox's\n"
