"""Malformed input through the MCP tools: every case gets a clear error naming the problem (and its line),
nothing is uploaded, and the server keeps serving.

The files are the shared corpus (tests/corpus, described by its manifest) plus cases too big or too special
to commit, built here; the arguments are bad ids, limits, metadata and paths.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from batch_mcp.sandbox import SandboxServer

from conftest import mcp_session, settings_for

CORPUS = Path(__file__).parent / "corpus"
MANIFEST: dict[str, dict[str, Any]] = json.loads((CORPUS / "manifest.json").read_text())["cases"]
INVALID = sorted(name for name, case in MANIFEST.items() if not case["expect_valid"])
WITH_WARNINGS = sorted(name for name, case in MANIFEST.items() if case["expect_valid"] and case["expect_code"])


def text(result: Any) -> str:
    return result.content[0].text


def uploads(sandbox: SandboxServer) -> tuple[int, int, int]:
    """What reached the API: upload intents, completed uploads, jobs."""
    stats = sandbox.sandbox.stats()
    return stats["files"], stats["uploaded_files"], stats["jobs"]


async def assert_still_serving(client: Client) -> None:
    alive = await client.call_tool("validate_batch_file", {"path": "data/reviews-anthropic.jsonl"})
    assert not alive.is_error and alive.structured_content["valid"], text(alive)


@pytest.fixture
def corpus_dir(workdir: Path) -> Path:
    """The corpus, copied into the allowed folder (so paths stay relative, as an agent writes them)."""
    target = workdir / "corpus"
    target.mkdir()
    for name in MANIFEST:
        (target / name).write_bytes((CORPUS / name).read_bytes())
    return target


def test_the_corpus_is_large_enough() -> None:
    assert len(INVALID) >= 40 and len(SPECIAL) + len(BAD_ARGUMENTS) >= 30


async def test_corpus_files_are_refused_with_their_problem_and_line(sandbox: SandboxServer, workdir: Path,
                                                                 corpus_dir: Path,
                                                                 subtests: pytest.Subtests) -> None:
    async with mcp_session(settings_for(sandbox, workdir)) as (client, _):
        for name in INVALID:
            with subtests.test(name):
                case = MANIFEST[name]
                options = {key: case[key] for key in ("provider", "endpoint") if key in case}
                before = uploads(sandbox)
                checked = await client.call_tool("validate_batch_file", {"path": f"corpus/{name}", **options})
                submitted = await client.call_tool("submit_batch", {"path": f"corpus/{name}", **options})
                await assert_still_serving(client)
                assert not checked.is_error, text(checked)
                report = checked.structured_content
                expected = (case["expect_code"], case["expect_line"], "error")
                problem = next(p for p in report["problems"] if (p["code"], p["line"], p["severity"]) == expected)
                assert report["valid"] is False and problem["message"]
                assert submitted.is_error and "nothing was uploaded" in text(submitted)
                where = f"line {case['expect_line']}: " if case["expect_line"] is not None else ""
                assert where + problem["message"] in text(submitted), text(submitted)
                assert uploads(sandbox) == before


async def test_corpus_warnings_are_reported_with_their_line(sandbox: SandboxServer, workdir: Path, corpus_dir: Path,
                                                           subtests: pytest.Subtests) -> None:
    async with mcp_session(settings_for(sandbox, workdir)) as (client, _):
        for name in WITH_WARNINGS:
            with subtests.test(name):
                case = MANIFEST[name]
                checked = await client.call_tool("validate_batch_file", {"path": f"corpus/{name}"})
                found = {(p["code"], p["line"], p["severity"]) for p in checked.structured_content["problems"]}
                assert (case["expect_code"], case["expect_line"], "warning") in found


# --- Files built at test time ------------------------------------------------------------------------

def _huge_sparse(folder: Path) -> str:
    with (folder / "huge.jsonl").open("wb") as sparse:
        sparse.truncate(201_000_000)
    return "huge.jsonl"


def _escaping_symlink(folder: Path) -> str:
    outside = folder.parent.parent / "outside.jsonl"
    outside.write_bytes((CORPUS / "valid_anthropic.jsonl").read_bytes())
    (folder / "escape.jsonl").symlink_to(outside)
    return "escape.jsonl"


def _dangling_symlink(folder: Path) -> str:
    (folder / "dangling.jsonl").symlink_to(folder / "gone.jsonl")
    return "dangling.jsonl"


def _fifo(folder: Path) -> str:
    os.mkfifo(folder / "pipe.jsonl")
    return "pipe.jsonl"


def _directory(folder: Path) -> str:
    (folder / "folder.jsonl").mkdir()
    return "folder.jsonl"


BOTH = ("validate_batch_file", "submit_batch")
#: name -> (builds the input in an allowed folder and returns its path, what each tool's answer must say).
#: A valid file over the per-batch limits is no error at all (submit_batch splits it into a job group, see
#: test_over_limits.py); the sparse one is a single 201 MB line, refused before anything parses (and buffers) it.
SPECIAL: dict[str, tuple[Callable[[Path], str], dict[str, str]]] = {
    "over 200 MB (sparse)": (_huge_sparse, dict.fromkeys(BOTH, "over the 200,000,000-byte limit of one batch")),
    "a directory": (_directory, dict.fromkeys(BOTH, "is a directory")),
    "a symlink leaving the allowed folder": (_escaping_symlink, dict.fromkeys(BOTH, "outside the allowed folders")),
    "a dangling symlink": (_dangling_symlink, dict.fromkeys(BOTH, "does not exist")),
    "/dev/zero": (lambda folder: "/dev/zero", dict.fromkeys(BOTH, "not a regular file")),
    "a FIFO": (_fifo, dict.fromkeys(BOTH, "not a regular file")),
    "a socket": (lambda folder: "sock.jsonl", dict.fromkeys(BOTH, "not a regular file")),
    "a missing path": (lambda folder: "no/such/file.jsonl", dict.fromkeys(BOTH, "does not exist")),
    "an empty path": (lambda folder: "", dict.fromkeys(BOTH, "at least 1 character")),
}


@pytest.fixture
def unix_socket(workdir: Path) -> Iterator[None]:
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(workdir / "sock.jsonl"))
        yield


async def test_unusable_files_are_refused_without_blocking(sandbox: SandboxServer, workdir: Path, unix_socket: None,
                                                          subtests: pytest.Subtests) -> None:
    async with mcp_session(settings_for(sandbox, workdir, allowed_dirs=[workdir, Path("/dev")])) as (client, _):
        for case, (build, answers) in SPECIAL.items():
            path = build(workdir)
            for tool, expected in answers.items():
                with subtests.test(f"{case} ({tool})"):
                    before = uploads(sandbox)
                    with anyio.fail_after(20):  # a FIFO or /dev/zero opened for reading would hang or never end
                        result = await client.call_tool(tool, {"path": path})
                    await assert_still_serving(client)
                    answer = text(result) if result.is_error else json.dumps(result.structured_content)
                    assert result.is_error or result.structured_content["valid"] is False, answer
                    assert expected in answer, answer
                    assert uploads(sandbox) == before


# --- Bad arguments -----------------------------------------------------------------------------------

UNKNOWN_ID = "00000000-0000-0000-0000-000000000000"
#: name -> (tool, arguments, what the error must say)
BAD_ARGUMENTS: dict[str, tuple[str, dict[str, Any], str]] = {
    "unknown batch id": ("get_batch", {"batch_id": UNKNOWN_ID}, "not found"),
    "unknown batch id to wait on": ("wait_for_batch", {"batch_id": UNKNOWN_ID, "timeout_s": 1}, "not found"),
    "unknown batch id to cancel": ("cancel_batch", {"batch_id": UNKNOWN_ID}, "not found"),
    "unknown batch id to download": ("download_batch_results", {"batch_id": UNKNOWN_ID}, "not found"),
    "batch id climbing paths": ("get_batch", {"batch_id": "../../etc/passwd"}, "batch_id"),
    "batch id with a slash": ("get_batch_results", {"batch_id": "a/b"}, "batch_id"),
    "empty batch id": ("get_batch", {"batch_id": ""}, "batch_id"),
    "overlong batch id": ("get_batch", {"batch_id": "b" * 129}, "batch_id"),
    "batch id with a space": ("cancel_batch", {"batch_id": "b 1"}, "batch_id"),
    "non-string batch id": ("get_batch", {"batch_id": 12345}, "batch_id"),
    "limit of 0": ("list_batches", {"limit": 0}, "limit"),
    "limit over 100": ("list_batches", {"limit": 101}, "limit"),
    "negative limit": ("list_batches", {"limit": -5}, "limit"),
    "text limit": ("list_batches", {"limit": "ten"}, "limit"),
    "unknown status": ("list_batches", {"status": "done"}, "status"),
    "zero wait": ("wait_for_batch", {"batch_id": "b-1", "timeout_s": 0}, "timeout_s"),
    "wait over an hour": ("wait_for_batch", {"batch_id": "b-1", "timeout_s": 99999}, "timeout_s"),
    "polling too fast": ("wait_for_batch", {"batch_id": "b-1", "poll_interval_s": 0.001}, "poll_interval_s"),
    "numeric metadata value": ("submit_batch", {"path": "data/tickets.jsonl",
                                                "metadata": [{"key": "n", "value": 1}]}, "metadata.0.value"),
    "null metadata value": ("submit_batch", {"path": "data/tickets.jsonl",
                                             "metadata": [{"key": "n", "value": None}]}, "metadata.0.value"),
    "list metadata value": ("submit_batch", {"path": "data/tickets.jsonl",
                                             "metadata": [{"key": "n", "value": ["a"]}]}, "metadata.0.value"),
    "nested metadata value": ("create_batch", {"file_id": "f-1", "provider": "anthropic",
                                               "metadata": [{"key": "n", "value": {"a": "b"}}]}, "metadata.0.value"),
    "metadata pair without a value": ("submit_batch", {"path": "data/tickets.jsonl", "metadata": [{"key": "n"}]},
                                      "metadata.0.value"),
    "metadata pair with another field": ("submit_batch", {"path": "data/tickets.jsonl",
                                                          "metadata": [{"key": "n", "value": "a", "note": "b"}]},
                                         "metadata.0.note"),
    "metadata as an object": ("submit_batch", {"path": "data/tickets.jsonl", "metadata": {"n": "a"}},
                              '[{"key": "project", "value": "triage"}]'),
    "metadata not a list": ("submit_batch", {"path": "data/tickets.jsonl", "metadata": "a"}, "metadata"),
    "huge metadata list": ("submit_batch", {"path": "data/tickets.jsonl",
                                            "metadata": [{"key": f"k{i}", "value": "v"} for i in range(1000)]},
                           "at most 16"),
    "empty metadata key": ("submit_batch", {"path": "data/tickets.jsonl", "metadata": [{"key": "", "value": "v"}]},
                           "at least 1 character"),
    "overlong metadata key": ("submit_batch", {"path": "data/tickets.jsonl",
                                               "metadata": [{"key": "k" * 65, "value": "v"}]}, "at most 64"),
    "overlong metadata value": ("submit_batch", {"path": "data/tickets.jsonl",
                                                 "metadata": [{"key": "k", "value": "v" * 513}]}, "at most 512"),
    "metadata key given twice": ("submit_batch", {"path": "data/tickets.jsonl",
                                                  "metadata": [{"key": "k", "value": "1"}, {"key": "k", "value": "2"}]},
                                 "metadata key 'k' is given more than once"),
    "unknown provider": ("submit_batch", {"path": "data/tickets.jsonl", "provider": "gemini"}, "provider"),
    "unsupported endpoint": ("validate_batch_file", {"path": "data/tickets.jsonl", "endpoint": "/v1/embeddings"},
                             "endpoint"),
    "endpoint differing from the lines": ("submit_batch",
                                          {"path": "data/tickets.jsonl", "endpoint": "/v1/responses"}, "line 1"),
    "overlong path": ("validate_batch_file", {"path": "a" * 5000}, "path"),
}


async def test_bad_arguments_are_refused_clearly(sandbox: SandboxServer, workdir: Path,
                                                 subtests: pytest.Subtests) -> None:
    async with mcp_session(settings_for(sandbox, workdir)) as (client, _):
        for case, (tool, arguments, expected) in BAD_ARGUMENTS.items():
            with subtests.test(case):
                before = uploads(sandbox)
                result = await client.call_tool(tool, arguments)
                await assert_still_serving(client)
                assert result.is_error and expected in text(result), text(result)
                assert uploads(sandbox) == before
