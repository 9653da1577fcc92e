"""Helpers shared by the benchmarks: best-of timing, peak RSS, and ratios against an in-run baseline.

Machines differ and are noisy, so every benchmark reports its figure as a ratio to a simple baseline
measured in the same process, with the best of a few runs of each.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.request import Request, urlopen

#: Scratch folder for generated inputs (gitignored); files there are reused across runs.
BENCH_DIR = Path(__file__).resolve().parent.parent / ".bench"


def best_of(runs: int, fn: Callable[[], object]) -> float:
    """Fastest wall time of ``runs`` calls, in seconds: the least disturbed by other load."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def print_ratio(label: str, seconds: float, baseline: float, target: float | None = None) -> bool:
    """Print ``label: seconds (ratio x baseline)`` and whether the ratio meets ``target``; return that."""
    ratio = seconds / baseline
    met = target is None or ratio <= target
    verdict = "" if target is None else f"  target <= {target:.1f}: {'met' if met else 'MISSED'}"
    print(f"{label:<28} {seconds:8.3f} s   ratio {ratio:5.2f}{verdict}")
    return met


# --- added for the transfer and MCP benchmarks: headers, child processes, servers, statistics ----------

#: The flag that makes a benchmark script serve measured operations to its parent (see ChildWorker).
CHILD_FLAG = "--child"
BENCH_TOKEN = "bench-token"
STARTUP_TIMEOUT_S = 30.0


def print_header(title: str, inputs: str) -> None:
    """What is measured, on what input, on which machine: a figure means little without all three."""
    print(title)
    print(f"input: {inputs}")
    print(f"machine: {os.cpu_count()} cores, Python {platform.python_version()} on {platform.system()} "
          f"{platform.machine()}")


def request_file(requests: int) -> Path:
    """The request file bench_validate.py measures (``requests`` lines of ~4 KB), generated once."""
    from bench_validate import LINE_BYTES, generate  # imported late: bench_validate imports this module

    path = BENCH_DIR / f"openai-chat-{requests}x{LINE_BYTES}.jsonl"
    if not path.exists():
        BENCH_DIR.mkdir(exist_ok=True)
        print(f"generating {path} ...", flush=True)
        generate(path, requests)
    return path


def warm_page_cache(path: Path) -> None:
    """Read a file once, in chunks (never whole: a large peak here would leak into children's figures)."""
    with path.open("rb", buffering=0) as source:
        while source.read(1 << 20):
            pass


def _verdict(value: float, target: float | None) -> tuple[bool, str]:
    met = target is None or value <= target
    return met, "" if target is None else f"  target <= {target:g}: {'met' if met else 'MISSED'}"


def print_ms_ratio(label: str, seconds: float, baseline: float, target: float | None = None) -> bool:
    """Like :func:`print_ratio`, in milliseconds: for latencies too short to read in seconds."""
    met, verdict = _verdict(seconds / baseline, target)
    print(f"{label:<28} {seconds * 1000:8.2f} ms  ratio {seconds / baseline:5.2f}{verdict}")
    return met


def print_limit(label: str, value: float, unit: str, limit: float) -> bool:
    """Print an absolute figure against its ceiling (e.g. peak RSS in MiB); return whether it is met."""
    met, verdict = _verdict(value, limit)
    print(f"{label:<28} {value:8.1f} {unit}{verdict}")
    return met


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (``fraction`` 0.5 is the median): always one of the measured values."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


# --- child processes: the measured code runs alone, so its peak RSS and CPU are its own ---------------


class ChildWorker:
    """A fresh interpreter running ``script --child``, doing one measured operation per :meth:`run`.

    The child stays up between operations (as the backend does inside the server), so only its first
    operation pays for cold code paths; a benchmark alternates its runs with the baseline's.
    """

    def __init__(self, script: str) -> None:
        self._process = subprocess.Popen([sys.executable, script, CHILD_FLAG], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, text=True)

    def run(self, *args: str) -> dict[str, Any]:
        """Send ``args`` to the child's work function; return its figures, with its peak RSS so far."""
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.write(json.dumps(args) + "\n")
        self._process.stdin.flush()
        answer = self._process.stdout.readline()
        if not answer:
            raise RuntimeError(f"the child died (exit status {self._process.wait()}); its stderr is above")
        figures: dict[str, Any] = json.loads(answer)
        return figures

    def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        self._process.wait(30)


@contextmanager
def child_worker(script: str) -> Iterator[ChildWorker]:
    worker = ChildWorker(script)
    try:
        yield worker
    finally:
        worker.close()


def child_or_size(doc: str, work: Callable[..., dict[str, Any]], quick: str, full_runs: int = 5
                  ) -> tuple[int, int] | None:
    """A transfer benchmark's command line: as the child worker, serve ``work`` and return None; else the
    (requests, runs) to measure: 5,000 and 3 with ``--quick`` (whose help is ``quick``), else 50,000 and
    ``full_runs``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument(CHILD_FLAG, action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        serve_parent(work)
        return None
    return (5_000, 3) if args.quick else (50_000, full_runs)


def serve_parent(work: Callable[..., dict[str, Any]]) -> None:
    """The child's side of :class:`ChildWorker`: run ``work(*args)`` per request, answer its figures."""
    for line in sys.stdin:
        figures = work(*json.loads(line))
        print(json.dumps({**figures, "peak_rss_mib": own_peak_rss_mb()}), flush=True)


def own_peak_rss_mb() -> float:
    """Peak resident memory of this program alone, in MiB.

    On Linux ``ru_maxrss`` survives ``exec``: a child starts with its parent's peak. ``VmHWM`` is the
    peak of the program's own address space; elsewhere this falls back to :func:`peak_rss_mb`.
    """
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return peak_rss_mb()
    kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
    return kib / 1024


def cpu_seconds() -> float:
    """CPU time (user + system) of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def children_cpu_seconds() -> float:
    """CPU time of the child processes waited for so far (e.g. every curl run)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def process_cpu_seconds(pid: int) -> float:
    """CPU time of a running process, e.g. a server; NaN where /proc is not available."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def curl_seconds(*args: str) -> float:
    """Transfer time curl reports (``time_total``, summed over its URLs): its process start is not in it."""
    result = subprocess.run(["curl", "-sS", "--fail", "-w", "%{time_total}\n", *args], capture_output=True,
                            text=True, check=True)
    return sum(float(line) for line in result.stdout.split())


# --- servers in processes of their own ------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def background(name: str, command: list[str], port: int) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server process for the duration of the block, once it accepts connections on ``port``.

    Its stderr goes to ``.bench/<name>.log``, quoted if it does not start.
    """
    BENCH_DIR.mkdir(exist_ok=True)
    log = BENCH_DIR / f"{name}.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not start:\n{log.read_text()[-3000:]}") from None
                time.sleep(0.05)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


_SANDBOX_MAIN = ("import sys; from batch_mcp.sandbox import SandboxConfig, serve; "
                 "serve(SandboxConfig.model_validate_json(sys.argv[1]), port=int(sys.argv[2]))")


@dataclass(frozen=True)
class SandboxProcess:
    base_url: str
    token: str
    pid: int
    #: Where uploads land (``uploads/<file_id>.jsonl``), for checking and removing them.
    storage_dir: Path


@contextmanager
def sandbox_process(backend: str = "digitalocean", **pace: float) -> Iterator[SandboxProcess]:
    """The sandbox in a process of its own, so its CPU and memory never count against the measured backend.

    It emulates ``backend``'s API, and ``base_url`` is that API's base (what an SDK takes). Its rate
    limit is lifted (a benchmark makes many calls); its storage is ``.bench/sandbox-storage``. ``pace``
    overrides SandboxConfig's lifecycle fields (e.g. ``validating_s``).
    """
    from batch_mcp.sandbox import SandboxConfig
    from batch_mcp.sandbox.server import api_base_path

    storage = BENCH_DIR / "sandbox-storage"
    shutil.rmtree(storage, ignore_errors=True)
    config = SandboxConfig(backend=backend, token=BENCH_TOKEN, rate_limit_per_minute=1_000_000, storage_dir=storage,
                           **pace)
    port = free_port()
    command = [sys.executable, "-c", _SANDBOX_MAIN, config.model_dump_json(), str(port)]
    with background("sandbox", command, port) as process:
        base_url = f"http://127.0.0.1:{port}{api_base_path(config)}"
        yield SandboxProcess(base_url, BENCH_TOKEN, process.pid, storage)
    shutil.rmtree(storage, ignore_errors=True)


def create_file_intent(sandbox: SandboxProcess, file_name: str = "bench.jsonl") -> tuple[str, str]:
    """``(file_id, upload_url)`` of a new file intent: a fresh presigned URL, made without our client."""
    body = json.dumps({"file_name": file_name}).encode()
    headers = {"Authorization": f"Bearer {sandbox.token}", "Content-Type": "application/json"}
    request = Request(f"{sandbox.base_url}/v1/batches/files", data=body, headers=headers)
    with urlopen(request, timeout=10) as response:
        intent = json.load(response)
    return intent["file_id"], intent["upload_url"]
