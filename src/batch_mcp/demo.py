"""``batch-mcp demo``: the whole workflow, end to end, the way an agent runs it.

It starts the sandbox, launches ``batch-mcp serve`` as a stdio subprocess configured like a real
install (base URL, token, allowed folder, state folder in its environment), and drives it through the
MCP SDK's client: validate → submit → wait (with progress) → download → summary.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters

from batch_mcp.sandbox import SandboxConfig, SandboxServer

EXAMPLE = "tickets.jsonl"


def example_file(name: str = EXAMPLE) -> Path:
    """The bundled example: inside the installed package, or in the source tree's examples/ folder."""
    for folder in (Path(__file__).parent / "examples", Path(__file__).resolve().parents[2] / "examples"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"example file {name} not found")


def run_demo(workdir: Path | None = None) -> int:
    with ExitStack() as stack:
        folder = workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="batch-mcp-demo-")))
        folder.mkdir(parents=True, exist_ok=True)
        return anyio.run(_drive, folder.resolve())
    return 1


def _say(text: str = "") -> None:
    print(text, flush=True)


async def _call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    if result.is_error:
        raise RuntimeError(f"{tool} failed: {result.content[0].text}")
    return result.structured_content or {}


async def _drive(folder: Path) -> int:
    data = folder / "data"
    data.mkdir(exist_ok=True)
    request_file = data / EXAMPLE
    shutil.copyfile(example_file(), request_file)

    with SandboxServer(SandboxConfig(requests_per_s=120)) as sandbox:
        env = {
            "MODEL_ACCESS_KEY": sandbox.token,
            "BATCH_MCP_BASE_URL": sandbox.base_url,
            "BATCH_MCP_ALLOWED_DIRS": str(folder),
            "BATCH_MCP_STATE_DIR": str(folder / "state"),
            "BATCH_MCP_LOG_LEVEL": "WARNING",
            "PATH": os.environ.get("PATH", ""),
        }
        server = StdioServerParameters(command=sys.executable, args=["-m", "batch_mcp", "serve"], env=env,
                                       cwd=str(folder))
        _say("batch-mcp demo: an agent classifies 300 support tickets with a batch job (offline sandbox)")
        _say(f"  sandbox API    {sandbox.base_url}")
        _say(f"  working folder {folder}")
        async with Client(server) as client:
            tools = [t.name for t in (await client.list_tools()).tools]
            _say(f"  MCP server     `batch-mcp serve` over stdio, {len(tools)} tools, "
                 f"protocol {client.protocol_version}")

            _say("\n1. validate_batch_file data/tickets.jsonl")
            report = await _call(client, "validate_batch_file", path="data/tickets.jsonl")
            models = ", ".join(f"{m} x{n}" for m, n in report["models"].items())
            _say(f"   valid={report['valid']}  {report['requests']} requests  {report['bytes']:,} bytes  "
                 f"provider={report['provider']}  endpoint={report['endpoint']}")
            _say(f"   models: {models}; ~{report['estimated_input_tokens']:,} input tokens")

            _say("\n2. submit_batch (validate + upload + create, idempotent)")
            submitted = await _call(client, "submit_batch", path="data/tickets.jsonl",
                                    metadata={"project": "support-triage"})
            batch_id = submitted["batch"]["batch_id"]
            _say(f"   batch_id={batch_id}  status={submitted['batch']['status']}")
            again = await _call(client, "submit_batch", path="data/tickets.jsonl",
                                metadata={"project": "support-triage"})
            _say(f"   submitted again by mistake -> same job: {again['batch']['batch_id'] == batch_id} "
                 f"(reused_existing_job={again['reused_existing_job']})")

            _say("\n3. wait_for_batch (progress notifications)")
            seen: list[float] = []

            async def on_progress(done: float, total: float | None, message: str | None) -> None:
                if total and (not seen or done - seen[-1] >= total / 4 or done == total):
                    seen.append(done)
                    _say(f"   progress {int(done):>4}/{int(total)}  {_bar(done / total)}")

            waited = (await client.call_tool("wait_for_batch", {"batch_id": batch_id, "timeout_s": 120,
                                                                "poll_interval_s": 0.5},
                                             progress_callback=on_progress)).structured_content or {}
            job = waited["batch"]
            _say(f"   status={job['status']} after {waited['waited_s']} s: {job['completed']} succeeded, "
                 f"{job['failed']} failed")

            _say("\n4. download_batch_results")
            summary = await _call(client, "download_batch_results", batch_id=batch_id)
            _say(f"   results -> {_rel(summary['output_path'], folder)}")
            if summary["error_path"]:
                _say(f"   errors  -> {_rel(summary['error_path'], folder)}")
            _say(f"   succeeded={summary['succeeded']} failed={summary['failed']} missing={summary['missing']}  "
                 f"tokens in/out={summary['usage']['input_tokens']:,}/{summary['usage']['output_tokens']:,}")
            if summary["error_codes"]:
                _say(f"   error codes: {json.dumps(summary['error_codes'])}")
            for item in summary["preview"][:3]:
                _say(f"   {item['custom_id']}: {item['text'] or item['error']}")

            jobs = json.loads((await client.read_resource("batch://jobs")).contents[0].text)
            _say(f"\n5. resource batch://jobs lists {jobs['count']} job(s); next step: {summary['next_step']}")
        ok = job["status"] == "completed" and summary["succeeded"] > 0
        _say("\ndemo " + ("finished: every step passed." if ok else "FAILED."))
        return 0 if ok else 1


def _bar(fraction: float, width: int = 24) -> str:
    filled = int(round(fraction * width))
    return "[" + "#" * filled + "." * (width - filled) + "]"


def _rel(path: str, folder: Path) -> str:
    return str(Path(path).relative_to(folder)) if Path(path).is_relative_to(folder) else path
