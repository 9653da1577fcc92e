"""Stateless replicas: three ``batch-mcp serve`` on one PostgreSQL store against one replica on SQLite.

A few hundred simulated agents (asyncio tasks sharing a small pool of MCP sessions per replica over
streamable HTTP) each submit a small file (one in five the same shared file, the rest distinct), poll
``get_batch`` until the job ends and download its results, every step through a different replica, as a
load balancer would spread them. The sandbox runs standalone in a process of its own (a fresh one per run).

1. baseline: one replica on SQLite (its own state folder); 2. one replica on PostgreSQL (what the store
   costs); 3. three replicas on one PostgreSQL schema; these alternate for two rounds; 4. three replicas,
   one killed with SIGKILL once half the agents have submitted: a call that dies with it is retried on a
   live replica. Printed, for the fastest run of each kind: flows per second (ratio to the baseline,
   higher is better), p50/p95 of ``get_batch`` and ``submit_batch`` (ratios, lower is better), and the
   replicas' CPU time during the run. Checked in every run: exactly one job per distinct file at the
   sandbox and in the store, every agent of the shared file named the same job, and no record lost (each
   download accounts for every line of its file). Exit status 1 when a check fails.

    export BATCH_MCP_TEST_POSTGRES_URL="$(.ci/postgres)"
    python bench/bench_replicas.py            # 300 agents per run, best of two alternating rounds
    python bench/bench_replicas.py --quick    # 30 agents per run, one round (smoke test)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import AsyncExitStack, ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from _common import (
    BENCH_DIR,
    SandboxProcess,
    background,
    free_port,
    percentile,
    print_header,
    print_ms_ratio,
    process_cpu_seconds,
    sandbox_process,
)

WORK = BENCH_DIR / "replicas"
BASELINE = "1 replica, SQLite"
LINES = 3  # requests per file: the job, not the file, is what is measured
SHARED_EVERY = 5  # every fifth agent submits the shared file
SESSIONS = 4  # MCP sessions per replica, shared by the agents
POLL_S = 0.5
#: Seconds a job stays in validating at the sandbox (0.3 by default): long enough to be polled a few times.
VALIDATING_S = 3.0
CALL_TIMEOUT_S = 300.0  # longer than a claim's lease: a submission orphaned by the kill waits that out
#: Every agent's call on its own connection (no queue in the client in front of the replica), none kept idle
#: as long as the server's 5 s keep-alive: reusing one it is closing fails the call and the session with it.
UNLIMITED = httpx2.Limits(max_connections=None, max_keepalive_connections=None, keepalive_expiry=1.0)
#: A killed replica's claim is taken over once its lease lapses (read by servers that have the setting).
LEASE_S = "2"


def request_files(agents: int) -> list[Path]:
    """Each agent's file: distinct ones, and the shared one for every ``SHARED_EVERY``-th agent."""
    inputs = WORK / "inputs"
    shutil.rmtree(inputs, ignore_errors=True)
    inputs.mkdir(parents=True)
    run = uuid.uuid4().hex[:8]  # never the same content as an earlier run's

    def write(name: str) -> Path:
        path = inputs / f"{name}.jsonl"
        path.write_text("".join(json.dumps({
            "custom_id": f"{name}-{line}", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "gpt-4o-mini", "max_tokens": 16,
                     "messages": [{"role": "user", "content": f"Run {run}, file {name}, line {line}."}]},
        }) + "\n" for line in range(LINES)))
        return path

    shared = write("shared")
    return [shared if number % SHARED_EVERY == 0 else write(f"agent-{number}") for number in range(agents)]


@dataclass
class Replica:
    base: str
    process: subprocess.Popen[bytes]
    sessions: list[Client] = field(default_factory=list)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None


@contextmanager
def replicas(sandbox: SandboxProcess, count: int, store_url: str | None) -> Iterator[list[Replica]]:
    """``count`` servers over streamable HTTP, each with a state folder of its own, on ``store_url`` if given."""
    with ExitStack() as stack:
        started = []
        for number in range(count):
            state = WORK / f"state-{number}"
            shutil.rmtree(state, ignore_errors=True)
            env = {"MODEL_ACCESS_KEY": sandbox.token, "BATCH_MCP_BASE_URL": sandbox.base_url,
                   "BATCH_MCP_ALLOWED_DIRS": str(WORK), "BATCH_MCP_STATE_DIR": str(state),
                   "BATCH_MCP_CLAIM_LEASE_S": LEASE_S, "BATCH_MCP_LOG_LEVEL": "WARNING",
                   **({"BATCH_MCP_STORE_URL": store_url} if store_url else {})}
            port = free_port()
            command = ["env", *(f"{name}={value}" for name, value in env.items()), sys.executable, "-m",
                       "batch_mcp", "serve", "--transport", "streamable-http", "--port", str(port)]
            process = stack.enter_context(background(f"replica-{number}", command, port))
            started.append(Replica(f"http://127.0.0.1:{port}/mcp", process))
        yield started


@dataclass
class Outcome:
    agents: int
    batch_ids: dict[int, str] = field(default_factory=dict)  # each finished agent's job
    accounted: list[int] = field(default_factory=list)  # succeeded + failed + missing of each download
    get_batch_s: list[float] = field(default_factory=list)
    submit_s: list[float] = field(default_factory=list)
    retried: int = 0
    submitted: int = 0
    half_submitted: anyio.Event = field(default_factory=anyio.Event)

    def submit_done(self) -> None:
        self.submitted += 1
        if self.submitted * 2 >= self.agents:
            self.half_submitted.set()


class Router:
    """Spreads each agent's steps over the live replicas; a call lost with a killed replica goes to another."""

    def __init__(self, servers: list[Replica], outcome: Outcome) -> None:
        self.servers, self.outcome = servers, outcome

    async def call(self, agent: int, step: int, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        while True:
            live = [server for server in self.servers if server.alive]
            server = live[(agent + step) % len(live)]
            try:
                with anyio.fail_after(CALL_TIMEOUT_S):
                    result = await server.sessions[agent % SESSIONS].call_tool(tool, arguments)
            except Exception:
                if server.alive:
                    raise
                self.outcome.retried += 1
                continue
            if result.is_error:
                raise RuntimeError(f"{tool}: {result.content[0].text}")  # type: ignore[union-attr]
            answer: dict[str, Any] = result.structured_content or {}
            return answer


async def agent(router: Router, number: int, path: Path) -> None:
    start = time.perf_counter()
    answer = await router.call(number, 0, "submit_batch", {"path": str(path)})
    router.outcome.submit_s.append(time.perf_counter() - start)
    batch_id = answer["batch"]["batch_id"]
    router.outcome.submit_done()
    for step in range(1, 10_000):
        start = time.perf_counter()
        view = await router.call(number, step, "get_batch", {"batch_id": batch_id})
        router.outcome.get_batch_s.append(time.perf_counter() - start)
        if view["terminal"]:
            break
        await anyio.sleep(POLL_S)
    for attempt in range(5):  # a fresh folder per attempt: a download cut short never blocks its retry
        try:
            summary = await router.call(number, 2, "download_batch_results",
                                        {"batch_id": batch_id, "dest_dir": str(WORK / "out" / f"{number}-{attempt}")})
            break
        except RuntimeError:
            if attempt == 4:
                raise
    router.outcome.batch_ids[number] = batch_id
    router.outcome.accounted.append(summary["succeeded"] + summary["failed"] + summary["missing"])


async def host_sessions(server: Replica, ready: anyio.Event, stop: anyio.Event) -> None:
    """Keep ``server``'s sessions open until ``stop``, in a task of their own: when the replica is killed, their
    transport's failure ends this task alone, and the calls waiting on them fail (the router retries them)."""
    try:
        async with httpx2.AsyncClient(timeout=CALL_TIMEOUT_S, limits=UNLIMITED) as http, AsyncExitStack() as stack:
            for _ in range(SESSIONS):
                server.sessions.append(await stack.enter_async_context(
                    Client(streamable_http_client(server.base, http_client=http, terminate_on_close=False))))
            ready.set()
            await stop.wait()
    except Exception:
        if server.alive:
            raise


async def drive(servers: list[Replica], files: list[Path], kill: bool) -> tuple[Outcome, float]:
    """Every agent's flow at once; with ``kill``, SIGKILL the first replica once half have submitted."""
    outcome = Outcome(len(files))
    router = Router(servers, outcome)
    stop = anyio.Event()
    async with anyio.create_task_group() as hosts:
        for server in servers:
            ready = anyio.Event()
            hosts.start_soon(host_sessions, server, ready, stop)
            await ready.wait()
        start = time.perf_counter()
        async with anyio.create_task_group() as agents:
            for number, path in enumerate(files):
                agents.start_soon(agent, router, number, path)
            if kill:
                await outcome.half_submitted.wait()
                servers[0].process.send_signal(signal.SIGKILL)
        elapsed = time.perf_counter() - start
        stop.set()
    return outcome, elapsed


def store_counts(store_url: str | None, state_dir: Path) -> tuple[int, int, int]:
    """(submissions, submissions with a job, batches) in the store."""
    sql = ("SELECT (SELECT count(*) FROM submissions), (SELECT count(batch_id) FROM submissions),"
           " (SELECT count(*) FROM batches)")
    if store_url is None:
        with sqlite3.connect(state_dir / "jobs.sqlite3") as conn:
            row = conn.execute(sql).fetchone()
    else:
        import psycopg

        with psycopg.connect(store_url) as conn:
            row = conn.execute(sql).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def sandbox_admin(sandbox: SandboxProcess, route: str) -> Any:
    origin = "/".join(sandbox.base_url.split("/", 3)[:3])
    return httpx2.get(f"{origin}/_sandbox/{route}", headers={"Authorization": f"Bearer {sandbox.token}"},
                      timeout=60).json()


@contextmanager
def schema(base_url: str) -> Iterator[str]:
    """A fresh schema in ``base_url``'s database, dropped afterwards: the store URL of it."""
    import psycopg

    name = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    try:
        yield f"{base_url}{'&' if '?' in base_url else '?'}options=-csearch_path%3D{name}"
    finally:
        with psycopg.connect(base_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {name} CASCADE")


@dataclass
class Run:
    label: str
    elapsed: float
    outcome: Outcome
    failures: list[str]
    creates: int
    server_cpu_s: float  # during the run, of the replicas still running at its end

    @property
    def rate(self) -> float:
        """Flows (submit, polls, download) finished per second."""
        return len(self.outcome.batch_ids) / self.elapsed


def run(label: str, agents: int, count: int, postgres: str | None, kill: bool = False) -> Run:
    files = request_files(agents)
    shutil.rmtree(WORK / "out", ignore_errors=True)
    with ExitStack() as stack:
        sandbox = stack.enter_context(sandbox_process(validating_s=VALIDATING_S))
        store_url = stack.enter_context(schema(postgres)) if postgres else None
        servers = stack.enter_context(replicas(sandbox, count, store_url))
        started_cpu = [process_cpu_seconds(server.process.pid) for server in servers]
        outcome, elapsed = anyio.run(drive, servers, files, kill)
        cpu = sum(process_cpu_seconds(server.process.pid) - before
                  for server, before in zip(servers, started_cpu, strict=True) if server.alive)
        distinct = len(set(files))
        failures = []
        jobs = int(sandbox_admin(sandbox, "stats")["jobs"])
        # more creates than jobs: a create was sent again (same client token) and answered with its job
        creates = sum(record["operation"] == "create_batch" for record in sandbox_admin(sandbox, "requests"))
        if jobs != distinct:
            failures.append(f"{jobs} jobs at the sandbox for {distinct} distinct files")
        if (counts := store_counts(store_url, WORK / "state-0")) != (distinct,) * 3:
            failures.append(f"store has (submissions, with a job, batches) = {counts}, not {distinct} each")
    named = set(outcome.batch_ids.values())
    shared = {outcome.batch_ids.get(number) for number, path in enumerate(files) if path.stem == "shared"}
    if len(outcome.batch_ids) != agents or len(named) != distinct:
        failures.append(f"{len(outcome.batch_ids)} agents finished naming {len(named)} jobs")
    if len(shared) > 1:
        failures.append(f"the shared file's agents were told of {len(shared)} jobs")
    if lost := sum(1 for accounted in outcome.accounted if accounted != LINES):
        failures.append(f"{lost} downloads did not account for all {LINES} lines")
    return Run(label, elapsed, outcome, failures, creates, cpu)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="30 agents per run (smoke test)")
    parser.add_argument("--postgres-url", default=os.environ.get("BATCH_MCP_TEST_POSTGRES_URL"),
                        help="a database to make schemas in (default: $BATCH_MCP_TEST_POSTGRES_URL)")
    args = parser.parse_args()
    if not args.postgres_url:
        parser.error('no PostgreSQL: export BATCH_MCP_TEST_POSTGRES_URL="$(.ci/postgres)" or pass --postgres-url')
    agents, rounds = (30, 1) if args.quick else (300, 2)
    print_header("Replicas: 1 and 3 servers on PostgreSQL vs 1 on SQLite, streamable HTTP, standalone sandbox",
                 f"{agents} agents per run ({agents // SHARED_EVERY} on one shared file), {LINES}-line files, "
                 f"{SESSIONS} MCP sessions per replica, jobs validating {VALIDATING_S:g} s, "
                 f"get_batch every {POLL_S:g} s until the job ends")
    runs = []
    for _ in range(rounds):  # alternating, so both see the same load from the rest of the machine
        runs += [run(BASELINE, agents, 1, None), run("1 replica, PostgreSQL", agents, 1, args.postgres_url),
                 run("3 replicas, PostgreSQL", agents, 3, args.postgres_url)]
    runs.append(run("3 on PostgreSQL, 1 killed", agents, 3, args.postgres_url, kill=True))
    for each in runs:
        print(f"{each.label}: {each.elapsed:.1f} s, {each.rate:.1f} flows/s, server CPU {each.server_cpu_s:.1f} s, "
              f"{len(each.outcome.get_batch_s)} get_batch calls, {each.outcome.retried} calls retried, "
              f"{each.creates} creates at the sandbox for {len(set(each.outcome.batch_ids.values()))} jobs")
        for failure in each.failures:
            print(f"  FAILED: {failure}")
    best: dict[str, Run] = {}
    for each in runs:
        if each.label not in best or each.elapsed < best[each.label].elapsed:
            best[each.label] = each
    base = best[BASELINE]
    print(f"best of {rounds} (the kill run once), ratios to {BASELINE}:")
    for label, each in best.items():
        cpu, base_cpu = each.server_cpu_s / len(each.outcome.batch_ids), base.server_cpu_s / len(base.outcome.batch_ids)
        print(f"{label}: {each.rate:.1f} flows/s, ratio {each.rate / base.rate:.2f} (higher is better); replicas' "
              f"CPU {cpu * 1000:.0f} ms per flow, ratio {cpu / base_cpu:.2f}")
        for tool in ("get_batch", "submit"):
            for fraction, name in ((0.5, "p50"), (0.95, "p95"), (1.0, "max")):
                print_ms_ratio(f"  {tool} {name}", percentile(getattr(each.outcome, f"{tool}_s"), fraction),
                               percentile(getattr(base.outcome, f"{tool}_s"), fraction))
    ok = not any(each.failures for each in runs)
    print("one job per distinct file, nothing lost: " + ("yes" if ok else "NO"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
