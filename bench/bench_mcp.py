"""What the MCP layer costs: per-call latency, cold start of the server, and start-up of the validator.

1. ``get_batch`` through ``batch-mcp serve`` over stdio (the SDK's client, as an agent host calls it)
   against the same ``GET /v1/batches/{id}`` made directly with httpx2: p50 and p95 of many calls
   each, in alternating blocks. The sandbox runs in its own process. A bare server's trivial tool,
   called the same way, shows the SDK's own floor.
2. Cold start: spawn → initialize → first ``call_tool`` answered, for ``batch-mcp serve`` (first call:
   ``get_batch``) against a bare mcp 2.3 MCPServer with one trivial tool, started the same way.
3. ``batch-mcp validate`` on a one-line file against ``python -c pass``; and a check, with
   ``python -X importtime``, that the validator imports none of mcp, httpx2, starlette, uvicorn.

No targets: the ratios say what the layer adds. The import check passes or fails.

    python bench/bench_mcp.py            # 500 calls each, 5 cold starts, 10 validator runs
    python bench/bench_mcp.py --quick    # 100 calls each, 2 cold starts, 3 validator runs
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import anyio
import httpx2
from mcp import Client, StdioServerParameters

from batch_mcp.backends.digitalocean import DigitalOceanBackend
from batch_mcp.domain import CreateSpec

from _common import (
    BENCH_DIR,
    SandboxProcess,
    percentile,
    print_header,
    print_ms_ratio,
    print_ratio,
    sandbox_process,
)

BLOCK = 50  # calls of one kind in a row; the kinds take turns block by block
WARM_UP = 10
FORBIDDEN_IMPORTS = frozenset({"mcp", "httpx2", "httpcore2", "starlette", "uvicorn"})
TINY_REQUEST = {"custom_id": "req-1", "method": "POST", "url": "/v1/chat/completions",
                "body": {"model": "gpt-4o-mini", "max_tokens": 16,
                         "messages": [{"role": "user", "content": "Say hello."}]}}
BARE_SERVER = """\
from mcp.server import MCPServer

server = MCPServer("bare")


@server.tool()
def ping() -> str:
    return "pong"


server.run()
"""
BARE_SERVER_PARAMS = StdioServerParameters(command=sys.executable, args=["-c", BARE_SERVER])

Call = Callable[[], Awaitable[None]]


def tiny_request_file() -> Path:
    path = BENCH_DIR / "tiny-request.jsonl"
    BENCH_DIR.mkdir(exist_ok=True)
    path.write_text(json.dumps(TINY_REQUEST) + "\n")
    return path


async def create_batch(sandbox: SandboxProcess, path: Path) -> str:
    """A real job in the sandbox, for get_batch to fetch."""
    backend = DigitalOceanBackend(api_key=sandbox.token, base_url=sandbox.base_url)
    try:
        staged = await backend.upload(path, "openai")
        job = await backend.create(CreateSpec(input_ref=staged.ref, line_format="openai",
                                              endpoint="/v1/chat/completions", client_token=uuid.uuid4().hex,
                                              planned_at=datetime.now(UTC)))
    finally:
        await backend.aclose()
    return job.id


def batch_mcp_server(sandbox: SandboxProcess) -> StdioServerParameters:
    """``batch-mcp serve`` configured as an MCP host would: token and base URL in its environment."""
    state = BENCH_DIR / "mcp-state"
    shutil.rmtree(state, ignore_errors=True)
    env = {"MODEL_ACCESS_KEY": sandbox.token, "BATCH_MCP_BASE_URL": sandbox.base_url,
           "BATCH_MCP_LOG_LEVEL": "WARNING", "BATCH_MCP_STATE_DIR": str(state),
           "BATCH_MCP_ALLOWED_DIRS": str(BENCH_DIR), "PATH": os.environ.get("PATH", "")}
    return StdioServerParameters(command=sys.executable, args=["-m", "batch_mcp", "serve"], env=env,
                                 cwd=str(BENCH_DIR))


async def timed_blocks(calls: dict[str, Call], count: int) -> dict[str, list[float]]:
    """Latency of ``count`` calls of each kind after a warm-up, ``BLOCK`` at a time in turn (shared noise)."""
    latencies: dict[str, list[float]] = {name: [] for name in calls}
    for call in calls.values():
        for _ in range(WARM_UP):
            await call()
    for _ in range(count // BLOCK):
        for name, call in calls.items():
            for _ in range(BLOCK):
                start = time.perf_counter()
                await call()
                latencies[name].append(time.perf_counter() - start)
    return latencies


async def call_latency(sandbox: SandboxProcess, batch_id: str, count: int) -> dict[str, list[float]]:
    """get_batch direct and through MCP; plus the SDK's own floor, a bare server's trivial tool."""
    url = f"{sandbox.base_url}/v1/batches/{batch_id}"
    headers = {"Authorization": f"Bearer {sandbox.token}", "Accept": "application/json"}
    async with httpx2.AsyncClient() as http, Client(batch_mcp_server(sandbox)) as ours, \
            Client(BARE_SERVER_PARAMS) as bare:

        async def direct() -> None:
            response = await http.get(url, headers=headers)
            assert response.status_code == 200, response.text

        async def through_mcp() -> None:
            result = await ours.call_tool("get_batch", {"batch_id": batch_id})
            assert not result.is_error, result.content

        async def bare_ping() -> None:
            await bare.call_tool("ping", {})

        return await timed_blocks({"direct": direct, "mcp": through_mcp, "bare": bare_ping}, count)


async def cold_start(server: StdioServerParameters, tool: str, arguments: dict[str, str]) -> float:
    """Seconds from spawning the server to the answer of its first tool call (its shutdown not counted)."""
    start = time.perf_counter()
    async with Client(server) as client:
        result = await client.call_tool(tool, arguments)
        elapsed = time.perf_counter() - start
    assert not result.is_error, result.content
    return elapsed


async def cold_starts(sandbox: SandboxProcess, batch_id: str, runs: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"bare": [], "batch-mcp": []}
    for _ in range(runs):  # alternating, so both see the same load
        times["bare"].append(await cold_start(BARE_SERVER_PARAMS, "ping", {}))
        times["batch-mcp"].append(
            await cold_start(batch_mcp_server(sandbox), "get_batch", {"batch_id": batch_id}))
    return times


def process_seconds(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def validator_command() -> list[str]:
    """The installed ``batch-mcp`` script beside this interpreter, else ``python -m batch_mcp``."""
    script = Path(sys.executable).with_name("batch-mcp")
    return [str(script)] if script.exists() else [sys.executable, "-m", "batch_mcp"]


def validator_imports(path: Path) -> list[str]:
    """Every module ``batch-mcp validate`` imports, from ``python -X importtime``."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "batch_mcp", "validate", str(path)],
                            check=True, capture_output=True, text=True)
    return [line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines()
            if line.startswith("import time:") and "imported package" not in line]


def print_best_and_median(baseline_label: str, baseline: list[float], label: str, times: list[float]) -> None:
    for statistic, name in ((min, "best"), (statistics.median, "median")):
        print_ratio(f"{baseline_label} {name}", statistic(baseline), statistic(baseline))
        print_ratio(f"{label} {name}", statistic(times), statistic(baseline))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls and runs (smoke test)")
    args = parser.parse_args()
    calls, starts, validations = (100, 2, 3) if args.quick else (500, 5, 10)
    path = tiny_request_file()
    print_header("MCP overhead: get_batch over stdio vs direct HTTP; cold start; validator start-up",
                 f"{calls} get_batch calls each (after {WARM_UP} to warm up), {starts} cold starts each, "
                 f"{validations} validator runs of a 1-line file")

    with sandbox_process() as sandbox:
        batch_id = anyio.run(create_batch, sandbox, path)
        latency = anyio.run(call_latency, sandbox, batch_id, calls)
        startup = anyio.run(cold_starts, sandbox, batch_id, starts)

    print(f"\nget_batch latency ({calls} calls each)")
    for name, fraction in (("p50", 0.5), ("p95", 0.95)):
        baseline = percentile(latency["direct"], fraction)
        print_ms_ratio(f"direct httpx2 GET {name}", baseline, baseline)
        print_ms_ratio(f"MCP stdio call_tool {name}", percentile(latency["mcp"], fraction), baseline)
    floor = [percentile(latency["bare"], fraction) * 1000 for fraction in (0.5, 0.95)]
    print(f"for reference, a bare MCPServer's trivial tool over stdio: p50 {floor[0]:.2f} ms, "
          f"p95 {floor[1]:.2f} ms (the SDK's own floor)")

    print(f"\ncold start to the first tool answer ({starts} runs each)")
    print_best_and_median("bare MCPServer", startup["bare"], "batch-mcp serve", startup["batch-mcp"])

    print(f"\nvalidator start-up ({validations} runs each)")
    command = [*validator_command(), "validate", str(path)]
    times: dict[str, list[float]] = {"pass": [], "validate": []}
    for _ in range(validations):
        times["pass"].append(process_seconds([sys.executable, "-c", "pass"]))
        times["validate"].append(process_seconds(command))
    print_best_and_median("python -c pass", times["pass"], "batch-mcp validate", times["validate"])
    modules = validator_imports(path)
    heavy = sorted({name for name in modules if name.split(".")[0] in FORBIDDEN_IMPORTS})
    print(f"batch-mcp validate imports {len(modules)} modules; "
          + (f"MISSED: it imports {', '.join(heavy)}" if heavy else
             f"none of {', '.join(sorted(FORBIDDEN_IMPORTS))}: met"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
