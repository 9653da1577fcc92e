"""A new ``batch-mcp serve --sandbox`` process per tool call, as llama-index and langchain's ``get_tools()`` run it.

Each run spawns the server over stdio and times, in alternating order so all see the same load:

1. ``python -c "import batch_mcp"``: the interpreter and our package, the floor of any process of ours;
2. a bare mcp 2.3 MCPServer with one trivial tool: spawn, ``tools/list``, exit (the SDK's own floor);
3. ``batch-mcp serve --sandbox``: spawn to the ``tools/list`` answer, and to the process's exit;
4. the same with a ``get_batch`` call on a job a previous process submitted, to its exit: whether the
   job is still there, and what a call that reaches the embedded emulator costs.

No targets: the ratios to the bare server's session say what ours adds to the SDK's floor.

    python bench/bench_per_call.py            # 7 runs each
    python bench/bench_per_call.py --quick    # 3 runs each
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import anyio
from mcp import Client, StdioServerParameters

from batch_mcp.demo import example_file

from _common import BENCH_DIR, print_header, print_ratio

BARE_SERVER = """\
from mcp.server import MCPServer

server = MCPServer("bare")


@server.tool()
def ping() -> str:
    return "pong"


server.run()
"""
STATE = BENCH_DIR / "per-call-state"


def sandbox_server() -> StdioServerParameters:
    """``serve --sandbox`` as an MCP host starts it: a state folder and an allowed folder, nothing else."""
    env = {"BATCH_MCP_LOG_LEVEL": "WARNING", "BATCH_MCP_STATE_DIR": str(STATE),
           "BATCH_MCP_ALLOWED_DIRS": str(BENCH_DIR), "PATH": os.environ.get("PATH", "")}
    return StdioServerParameters(command=sys.executable, args=["-m", "batch_mcp", "serve", "--sandbox"], env=env,
                                 cwd=str(BENCH_DIR))


async def session(server: StdioServerParameters, call: tuple[str, dict[str, str]] | None = None
                  ) -> tuple[float, float, bool]:
    """Seconds to the ``tools/list`` answer and to the process's exit, and whether ``call`` succeeded."""
    start = time.perf_counter()
    async with Client(server) as client:
        await client.list_tools()
        listed = time.perf_counter() - start
        ok = True
        if call is not None:
            result = await client.call_tool(*call)
            ok = not result.is_error
    return listed, time.perf_counter() - start, ok


async def submit(path: Path) -> str:
    """A job submitted by one process of its own, which then exits."""
    async with Client(sandbox_server()) as client:
        result = await client.call_tool("submit_batch", {"path": str(path), "new": True})
    assert not result.is_error, result.content
    batch_id: str = result.structured_content["batch"]["batch_id"]
    return batch_id


def process_seconds(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs (smoke test)")
    runs = 3 if parser.parse_args().quick else 7
    print_header("One serve --sandbox process per tool call: start-up, exit, and a job across processes",
                 f"{runs} runs of each, alternating; get_batch on the bundled tickets.jsonl job")
    shutil.rmtree(STATE, ignore_errors=True)
    BENCH_DIR.mkdir(exist_ok=True)
    path = BENCH_DIR / "tickets.jsonl"
    shutil.copyfile(example_file("tickets.jsonl"), path)
    bare = StdioServerParameters(command=sys.executable, args=["-c", BARE_SERVER])
    batch_id = anyio.run(submit, path)

    times: dict[str, list[float]] = {name: [] for name in ("import", "bare", "listed", "exited", "get_batch")}
    found = 0
    for _ in range(runs):
        times["import"].append(process_seconds([sys.executable, "-c", "import batch_mcp"]))
        times["bare"].append(anyio.run(session, bare)[1])
        listed, exited, _ = anyio.run(session, sandbox_server())
        times["listed"].append(listed)
        times["exited"].append(exited)
        _, called, ok = anyio.run(session, sandbox_server(), ("get_batch", {"batch_id": batch_id}))
        times["get_batch"].append(called)
        found += ok

    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"\nmedians of {runs} runs; ratios against the bare MCPServer's session")
    print_ratio("python -c 'import batch_mcp'", median["import"], median["bare"])
    print_ratio("bare MCPServer session", median["bare"], median["bare"])
    print_ratio("serve --sandbox tools/list", median["listed"], median["bare"])
    print_ratio("serve --sandbox session", median["exited"], median["bare"])
    print_ratio("  + get_batch, session", median["get_batch"], median["bare"])
    print(f"get_batch found the job another process submitted in {found} of {runs} runs")
    return 0 if found == runs else 1


if __name__ == "__main__":
    raise SystemExit(main())
