"""What the framework examples share: the canonical job as a scripted model plays it, and how the server starts.

The job is validate_batch_file → submit_batch → wait_for_batch until it stops answering timed_out →
download_batch_results. ``next_call`` decides each step from the tool results the framework handed back
(the batch id from submit, ``timed_out`` from wait), as a real model would; each example wraps it in its
framework's own scripted or fake model.

Standard library only: an example runs in a venv holding its framework alone (langchain-mcp-adapters needs
mcp 1.x, batch-mcp 2.3), so the server may be another environment's ``batch-mcp`` (``BATCH_MCP_COMMAND``).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

JOB_FILE = "tickets.jsonl"
#: Model turns a run may take: a 75 s job takes about 20 quick waits, more than openai-agents' 10 turns and
#: LangGraph's 25 steps allow by default (pydantic-ai's 50 requests suffice: its waits last up to 50 s).
MAX_MODEL_TURNS = 60
PROMPT = f"Classify the support tickets in {JOB_FILE} with a batch job and bring the results back."


class JobFailed(RuntimeError):
    """A tool answered with an error, or the job ended without results."""


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, object]


@dataclass(frozen=True)
class Seen:
    """A tool result as the framework showed it to the model."""

    tool: str
    text: str
    error: bool = False


def text_of(content: str | list[dict]) -> str:
    """A tool result as a framework hands it over: a string, or content blocks (an MCP result's text blocks)."""
    return content if isinstance(content, str) else "".join(block.get("text", "") for block in content)


def first_object(text: str) -> object:
    """The tool's structured answer as the framework shows it: its JSON text first, perhaps followed by (or,
    as a list, beside) other content blocks such as the resource link of a download."""
    try:
        value, _ = json.JSONDecoder().raw_decode(text.strip())
    except ValueError:
        return None
    if isinstance(value, list):
        return next((item for item in value if isinstance(item, dict) and "type" not in item), None)
    return value


def next_call(history: list[Seen]) -> ToolCall | str:
    """The next tool call, or the final answer, given every tool result the model has seen so far."""
    if not history:
        return ToolCall("validate_batch_file", {"path": JOB_FILE})
    tool, text = history[-1].tool, history[-1].text
    result = None if history[-1].error else first_object(text)
    if not isinstance(result, dict):
        raise JobFailed(f"{tool} answered with an error: {text[:500]}")
    if tool == "validate_batch_file":
        if not result["valid"]:
            raise JobFailed(f"{JOB_FILE} is not valid: {result['problems']}")
        return ToolCall("submit_batch", {"path": JOB_FILE})
    if tool == "submit_batch" or (tool == "wait_for_batch" and result["timed_out"]):
        return ToolCall("wait_for_batch", {"batch_id": result["batch"]["batch_id"]})  # no timeout_s: the server's
    if tool == "wait_for_batch":
        return ToolCall("download_batch_results", {"batch_id": result["batch"]["batch_id"]})
    if result["status"] != "completed" or not result["succeeded"]:
        raise JobFailed(f"the job ended {result['status']} with {result['succeeded']} results")
    waits = sum(seen.tool == "wait_for_batch" for seen in history)
    return (f"{result['status']}: {result['succeeded']} succeeded, {result['failed']} failed, "
            f"{waits} wait_for_batch calls; table {Path(result['table_csv_path']).name}")


@dataclass(frozen=True)
class Server:
    """How to start ``batch-mcp serve`` over stdio: the pieces every framework's stdio client takes."""

    command: str
    args: list[str]
    env: dict[str, str]
    cwd: str


def server(workdir: Path, base_url: str | None) -> Server:
    """``serve --sandbox`` (the embedded emulators), or ``serve`` against a standalone ``batch-mcp sandbox``.

    The state folder sits in the work folder, so the run leaves nothing behind. The launcher is
    ``BATCH_MCP_COMMAND`` if set, else this interpreter's batch_mcp, else uvx."""
    if launcher := os.environ.get("BATCH_MCP_COMMAND"):
        command, *prefix = shlex.split(launcher)
    elif importlib.util.find_spec("batch_mcp"):
        command, prefix = sys.executable, ["-m", "batch_mcp"]
    else:
        command, prefix = "uvx", ["batch-mcp"]
    env = {"BATCH_MCP_LOG_LEVEL": "WARNING"}
    if base_url:  # a standalone DigitalOcean sandbox, set as a real account is: its URL and its token (never a
        # real key from this environment: that goes only to DigitalOcean)
        token = os.environ.get("BATCH_MCP_SANDBOX_TOKEN", "sandbox-token")  # what `batch-mcp sandbox` takes
        env |= {"BATCH_MCP_BASE_URL": base_url, "MODEL_ACCESS_KEY": token}
    mode = [] if base_url else ["--sandbox"]
    return Server(command, [*prefix, "serve", *mode, "--state-dir", str(workdir / "state")], env, str(workdir))


def main(framework: str, run: Callable[[Server], Awaitable[str]]) -> int:
    """Run the job in a fresh work folder holding the example's tickets; print one summary line."""
    parser = argparse.ArgumentParser(description=f"The canonical batch job driven through {framework}.")
    parser.add_argument("--base-url", help="a standalone `batch-mcp sandbox` (default: serve --sandbox)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="batch-mcp-agent-") as folder:
        workdir = Path(folder)
        shutil.copyfile(Path(__file__).with_name(JOB_FILE), workdir / JOB_FILE)
        started = time.monotonic()
        try:
            answer = asyncio.run(run(server(workdir, args.base_url)))
        except Exception as exc:  # the framework may wrap our JobFailed in its own error
            print(f"{framework}: FAILED after {time.monotonic() - started:.1f} s: {exc!r}", file=sys.stderr)
            return 1
    print(f"{framework}: {answer} in {time.monotonic() - started:.1f} s")
    return 0
