"""``batch-mcp demo``: the whole workflow, end to end, the way an agent runs it.

It starts one emulator per backend it shows, launches ``batch-mcp serve`` as a stdio subprocess configured
like a real install (each backend's key and base URL, allowed folder, state folder in its environment), and
drives it through the MCP SDK's client. Scenario ``tickets``: the same ticket file on DigitalOcean and on
OpenAI side by side: validate → submit to each → wait (with progress) → download → compare. Scenario
``reviews``: prepare a batch from a CSV → estimate cost → submit → results table → retry the failures →
merged table.
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

from batch_mcp.backends.registry import CATALOG
from batch_mcp.sandbox import SandboxConfig, SandboxServer

EXAMPLE = "tickets.jsonl"
REVIEWS = "reviews.csv"


def example_file(name: str = EXAMPLE) -> Path:
    """The bundled example: inside the installed package, or in the source tree's examples/ folder."""
    for folder in (Path(__file__).parent / "examples", Path(__file__).resolve().parents[2] / "examples"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"example file {name} not found")


def run_demo(workdir: Path | None = None, scenario: str = "tickets", backend: str | None = None) -> int:
    """Run ``scenario``; ``backend`` picks where the reviews scenario runs (the tickets one shows two at once)."""
    with ExitStack() as stack:
        folder = workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="batch-mcp-demo-")))
        folder.mkdir(parents=True, exist_ok=True)
        if scenario == "reviews":
            return anyio.run(_reviews, folder.resolve(), backend or REVIEWS_BACKEND)
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
async def _session(folder: Path, example: str, title: str, configs: list[SandboxConfig]) -> AsyncIterator[Client]:
    """An emulator per backend, plus `batch-mcp serve` as a stdio subprocess configured to use them (through
    each backend's own variables, as a user sets them), behind an MCP client."""
    data = folder / "data"
    data.mkdir(exist_ok=True)
    shutil.copyfile(example_file(example), data / example)
    with ExitStack() as stack:
        env = {
            "BATCH_MCP_ALLOWED_DIRS": str(folder),
            "BATCH_MCP_STATE_DIR": str(folder / "state"),
            "BATCH_MCP_LOG_LEVEL": os.environ.get("BATCH_MCP_LOG_LEVEL", "WARNING"),
            "PATH": os.environ.get("PATH", ""),
        }
        _say(f"batch-mcp demo: {title} (offline sandbox)")
        for config in configs:
            sandbox = stack.enter_context(SandboxServer(config))
            caps = CATALOG[config.backend].capabilities
            env.update({caps.token_env[0]: sandbox.token, caps.base_url_env: sandbox.base_url})
            _say(f"  {caps.label + ' API':<18} {sandbox.base_url}  (emulated)")
        server = StdioServerParameters(command=sys.executable, args=["-m", "batch_mcp", "serve"], env=env,
                                       cwd=str(folder))
        _say(f"  working folder     {folder}")
        async with Client(server) as client:
            tools = [t.name for t in (await client.list_tools()).tools]
            _say(f"  MCP server         `batch-mcp serve` over stdio, {len(tools)} tools, "
                 f"protocol {client.protocol_version}")
            yield client


#: The backends the tickets scenario runs the same file on, side by side.
SIDE_BY_SIDE = ("digitalocean", "openai")


async def _tickets(folder: Path) -> int:
    configs = [SandboxConfig(backend=name, requests_per_s=120) for name in SIDE_BY_SIDE]  # type: ignore[arg-type]
    title = "an agent classifies 300 support tickets, on two batch APIs side by side"
    async with _session(folder, EXAMPLE, title, configs) as client:
        _say("\n1. validate_batch_file data/tickets.jsonl")
        report = await _call(client, "validate_batch_file", path="data/tickets.jsonl")
        models = ", ".join(f"{m} x{n}" for m, n in report["models"].items())
        _say(f"   valid={report['valid']}  {report['requests']} requests  {report['bytes']:,} bytes  "
             f"provider={report['provider']}  endpoint={report['endpoint']}")
        _say(f"   models: {models}; ~{report['estimated_input_tokens']:,} input tokens")

        _say("\n2. submit_batch to each backend (validate + upload + create, exactly once)")
        ids: dict[str, str] = {}
        for backend in SIDE_BY_SIDE:
            submitted = await _call(client, "submit_batch", path="data/tickets.jsonl", backend=backend,
                                    metadata=[{"key": "project", "value": "support-triage"}])
            ids[backend] = submitted["batch"]["batch_id"]
            _say(f"   {backend:<13} batch_id={ids[backend]}  status={submitted['batch']['status']}")
        again = await _call(client, "submit_batch", path="data/tickets.jsonl", backend=SIDE_BY_SIDE[-1],
                            metadata=[{"key": "project", "value": "support-triage"}])
        _say(f"   submitted again by mistake -> same job: {again['batch']['batch_id'] == ids[SIDE_BY_SIDE[-1]]} "
             f"(reused_existing_job={again['reused_existing_job']}; {SIDE_BY_SIDE[-1]} has no idempotency key: "
             "the job carries batch-mcp's token in its metadata)")

        _say("\n3. wait_for_batch on both at once (progress notifications)")
        jobs: dict[str, dict[str, Any]] = {}

        async def wait(backend: str) -> None:
            seen: list[float] = []

            async def on_progress(done: float, total: float | None, message: str | None) -> None:
                if total and (not seen or done - seen[-1] >= total / 2 or done == total):
                    seen.append(done)
                    _say(f"   {backend:<13} {int(done):>4}/{int(total)}  {_bar(done / total)}")

            waited = (await client.call_tool("wait_for_batch", {"batch_id": ids[backend], "timeout_s": 120,
                                                                "poll_interval_s": 0.5},
                                             progress_callback=on_progress)).structured_content or {}
            jobs[backend] = waited["batch"]

        async with anyio.create_task_group() as waits:
            for backend in SIDE_BY_SIDE:
                waits.start_soon(wait, backend)

        _say("\n4. download_batch_results from each, into its own folder")
        summaries = {}
        for backend in SIDE_BY_SIDE:
            summary = summaries[backend] = await _call(client, "download_batch_results", batch_id=ids[backend],
                                                       dest_dir=f"batch-results/{backend}")
            _say(f"   {backend:<13} table -> {_rel(summary['table_csv_path'], folder)}")
        _say("\n   backend        status     succeeded  failed  tokens in/out    cost at batch prices")
        for backend, summary in summaries.items():
            cost = summary["cost"]
            price = f"${cost['total_cost']:.4f}" if cost and cost["total_cost"] is not None else "unpriced"
            discount = f" ({cost['batch_discount']:.0%} off)" if cost and cost["batch_discount"] else ""
            tokens = f"{summary['usage']['input_tokens']:,}/{summary['usage']['output_tokens']:,}"
            _say(f"   {backend:<13}  {jobs[backend]['status']:<9}  {summary['succeeded']:>9}  {summary['failed']:>6}"
                 f"  {tokens:<15}  {price}{discount}")
        for item in summaries[SIDE_BY_SIDE[0]]["preview"][:2]:
            _say(f"   {item['custom_id']}: {item['text'] or item['error']}")

        listed = json.loads((await client.read_resource("batch://jobs")).contents[0].text)
        _say(f"\n5. resource batch://jobs lists {listed['count']} job(s), each id naming its backend; "
             f"next step: {summaries[SIDE_BY_SIDE[0]]['next_step']}")
    ok = all(job["status"] == "completed" for job in jobs.values()) and all(
        summary["succeeded"] > 0 for summary in summaries.values())
    _say("\ndemo " + ("finished: every step passed on both backends." if ok else "FAILED."))
    return 0 if ok else 1


#: Where the reviews scenario runs unless told otherwise, and the model it asks for on each backend.
REVIEWS_BACKEND = "digitalocean"
REVIEWS_MODEL = {"anthropic": "claude-haiku-4-5"}


async def _reviews(folder: Path, backend: str = REVIEWS_BACKEND) -> int:
    config = SandboxConfig(backend=backend, requests_per_s=300, failure_rate=0.15)  # type: ignore[arg-type]
    title = (f"an agent summarises 150 product reviews from a CSV on {CATALOG[backend].capabilities.label}, then "
             "retries what failed")
    async with _session(folder, REVIEWS, title, [config]) as client:
        _say("\n1. prepare_batch_file data/reviews.csv with a {column} template")
        prepared = await _call(client, "prepare_batch_file", source="data/reviews.csv",
                               model=REVIEWS_MODEL.get(backend, "gpt-4o-mini"),
                               prompt="In one sentence, what does this {stars}-star {product} review complain "
                                      "about or praise? {review}", id_column="review_id", max_tokens=60)
        _say(f"   wrote {_rel(prepared['path'], folder)}: {prepared['records']} requests, valid={prepared['valid']}")
        _say(f"   example prompt: {prepared['example_prompt']}")
        cost = prepared["estimated_cost"]
        _say(f"   estimated cost: {_dollars(cost['total_cost'], 4)} at batch prices (as of {cost['prices_as_of']})")

        _say("\n2. submit_batch + wait_for_batch")
        batch_id = (await _call(client, "submit_batch", path=prepared["path"]))["batch"]["batch_id"]
        job = (await _call(client, "wait_for_batch", batch_id=batch_id, timeout_s=120, poll_interval_s=0.3))["batch"]
        _say(f"   {batch_id}: {job['status']}, {job['completed']} succeeded, {job['failed']} failed")

        _say("\n3. download_batch_results -> a table joined with the CSV's columns")
        summary = await _call(client, "download_batch_results", batch_id=batch_id)
        _say(f"   table: {_rel(summary['table_csv_path'], folder)}  succeeded={summary['succeeded']} "
             f"failed={summary['failed']}  cost={_dollars(summary['cost']['total_cost'], 6)}")
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


def _dollars(amount: float | None, places: int) -> str:
    return "unknown (no price for this model here)" if amount is None else f"${amount:.{places}f}"


def _bar(fraction: float, width: int = 24) -> str:
    filled = int(round(fraction * width))
    return "[" + "#" * filled + "." * (width - filled) + "]"


def _rel(path: str, folder: Path) -> str:
    return str(Path(path).relative_to(folder)) if Path(path).is_relative_to(folder) else path
