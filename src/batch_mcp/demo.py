"""``batch-mcp demo``: the whole workflow, end to end, the way an agent runs it.

It starts the sandbox, launches ``batch-mcp serve`` as a stdio subprocess configured like a real
install (base URL, token, allowed folder, state folder in its environment), and drives it through the
MCP SDK's client. Scenario ``tickets``: validate → submit → wait (with progress) → download → summary.
Scenario ``reviews``: prepare a batch from a CSV → estimate cost → submit → results table → retry the
failures → merged table.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters

from batch_mcp.sandbox import SandboxConfig, SandboxServer

EXAMPLE = "tickets.jsonl"
REVIEWS = "reviews.csv"


def example_file(name: str = EXAMPLE) -> Path:
    """The bundled example: inside the installed package, or in the source tree's examples/ folder."""
    for folder in (Path(__file__).parent / "examples", Path(__file__).resolve().parents[2] / "examples"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"example file {name} not found")


def run_demo(workdir: Path | None = None, scenario: str = "tickets") -> int:
    with ExitStack() as stack:
        folder = workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="batch-mcp-demo-")))
        folder.mkdir(parents=True, exist_ok=True)
        return anyio.run(SCENARIOS[scenario], folder.resolve())
    return 1


def _say(text: str = "") -> None:
    print(text, flush=True)


async def _call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    if result.is_error:
        raise RuntimeError(f"{tool} failed: {result.content[0].text}")
    return result.structured_content or {}


@asynccontextmanager
async def _session(folder: Path, example: str, title: str, config: SandboxConfig) -> AsyncIterator[Client]:
    """The sandbox, plus `batch-mcp serve` as a stdio subprocess configured to use it, behind an MCP client."""
    data = folder / "data"
    data.mkdir(exist_ok=True)
    shutil.copyfile(example_file(example), data / example)
    with SandboxServer(config) as sandbox:
        env = {
            "MODEL_ACCESS_KEY": sandbox.token,
            "BATCH_MCP_BASE_URL": sandbox.base_url,
            "BATCH_MCP_ALLOWED_DIRS": str(folder),
            "BATCH_MCP_STATE_DIR": str(folder / "state"),
            "BATCH_MCP_LOG_LEVEL": os.environ.get("BATCH_MCP_LOG_LEVEL", "WARNING"),
            "PATH": os.environ.get("PATH", ""),
        }
        server = StdioServerParameters(command=sys.executable, args=["-m", "batch_mcp", "serve"], env=env,
                                       cwd=str(folder))
        _say(f"batch-mcp demo: {title} (offline sandbox)")
        _say(f"  sandbox API    {sandbox.base_url}")
        _say(f"  working folder {folder}")
        async with Client(server) as client:
            tools = [t.name for t in (await client.list_tools()).tools]
            _say(f"  MCP server     `batch-mcp serve` over stdio, {len(tools)} tools, "
                 f"protocol {client.protocol_version}")
            yield client


async def _tickets(folder: Path) -> int:
    config = SandboxConfig(requests_per_s=120)
    title = "an agent classifies 300 support tickets with a batch job"
    async with _session(folder, EXAMPLE, title, config) as client:
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
        _say(f"   table   -> {_rel(summary['table_csv_path'], folder)} (one row per request, also as JSONL)")
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


async def _reviews(folder: Path) -> int:
    config = SandboxConfig(requests_per_s=300, failure_rate=0.15)
    title = "an agent summarises 150 product reviews from a CSV, then retries what failed"
    async with _session(folder, REVIEWS, title, config) as client:
        _say("\n1. prepare_batch_file data/reviews.csv with a {column} template")
        prepared = await _call(client, "prepare_batch_file", source="data/reviews.csv", model="gpt-4o-mini",
                               prompt="In one sentence, what does this {stars}-star {product} review complain "
                                      "about or praise? {review}", id_column="review_id", max_tokens=60)
        _say(f"   wrote {_rel(prepared['path'], folder)}: {prepared['records']} requests, valid={prepared['valid']}")
        _say(f"   example prompt: {prepared['example_prompt']}")
        cost = prepared["estimated_cost"]
        _say(f"   estimated cost: ${cost['total_cost']:.4f} at batch prices (as of {cost['prices_as_of']})")

        _say("\n2. submit_batch + wait_for_batch")
        batch_id = (await _call(client, "submit_batch", path=prepared["path"]))["batch"]["batch_id"]
        job = (await _call(client, "wait_for_batch", batch_id=batch_id, timeout_s=120, poll_interval_s=0.3))["batch"]
        _say(f"   {batch_id}: {job['status']}, {job['completed']} succeeded, {job['failed']} failed")

        _say("\n3. download_batch_results -> a table joined with the CSV's columns")
        summary = await _call(client, "download_batch_results", batch_id=batch_id)
        _say(f"   table: {_rel(summary['table_csv_path'], folder)}  succeeded={summary['succeeded']} "
             f"failed={summary['failed']}  cost=${summary['cost']['total_cost']:.6f}")
        rounds = 0
        while summary["failed"] or summary["missing"]:
            rounds += 1
            _say(f"\n{3 + rounds}. retry_failed_requests on {batch_id}")
            retry = await _call(client, "retry_failed_requests", batch_id=batch_id)
            batch_id = retry["submitted"]["batch"]["batch_id"]
            _say(f"   resubmitted {retry['retried']} request(s) as {batch_id}")
            await _call(client, "wait_for_batch", batch_id=batch_id, timeout_s=120, poll_interval_s=0.3)
            summary = await _call(client, "download_batch_results", batch_id=batch_id)
            _say(f"   merged table: succeeded={summary['succeeded']} failed={summary['failed']} "
                 f"missing={summary['missing']}")
            if rounds == 5:
                break
        with open(summary["table_csv_path"], newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        _say(f"\n   {len(rows)} rows, columns: {', '.join(list(rows[0])[:4])}, ..., {', '.join(list(rows[0])[-3:])}")
        for row in rows[:3]:
            _say(f"   {row['review_id']} ({row['product']}, {row['stars']} stars): {row['output_text']}")
    ok = summary["succeeded"] == 150
    _say("\ndemo " + ("finished: every review has a result." if ok else "FAILED."))
    return 0 if ok else 1


SCENARIOS = {"tickets": _tickets, "reviews": _reviews}


def _bar(fraction: float, width: int = 24) -> str:
    filled = int(round(fraction * width))
    return "[" + "#" * filled + "." * (width - filled) + "]"


def _rel(path: str, folder: Path) -> str:
    return str(Path(path).relative_to(folder)) if Path(path).is_relative_to(folder) else path
