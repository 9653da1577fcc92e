"""Upload speed of the DigitalOcean backend to the sandbox over loopback, as a ratio to ``curl -T`` of the same file.

The sandbox runs in a process of its own and every upload gets a fresh presigned URL (so a fresh
connection, for both). The backend's uploads run in a child process of their own, whose peak RSS is
the backend's alone; each is the whole ``DigitalOceanBackend.upload``, timed from the call to the
StagedInput: the file intent (one small POST for the presigned URL) and then the PUT of the file.
curl's figure is its own ``time_total`` for the PUT alone (its intent is made beforehand, untimed),
so the ratio charges the backend for one extra round trip of a few milliseconds. Runs alternate
between the two and each figure is the best run. Targets: ratio <= 1.3, backend peak RSS <= 100 MiB.
Every upload is checked to have arrived whole, then deleted. The CPU time of sender and receiver is
printed too: when the sandbox's CPU per upload approaches the wall time, the sandbox, not the
sender, sets the pace.

    python bench/bench_upload.py            # the 200 MB / 50,000-line request file of bench_validate.py
    python bench/bench_upload.py --quick    # its 20 MB version, as a smoke test
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NamedTuple

import anyio

from batch_mcp.backends.base import Backend
from batch_mcp.backends.digitalocean import DigitalOceanBackend

from _common import (
    SandboxProcess,
    child_or_size,
    child_worker,
    children_cpu_seconds,
    cpu_seconds,
    create_file_intent,
    curl_seconds,
    own_peak_rss_mb,
    print_header,
    print_limit,
    print_ratio,
    process_cpu_seconds,
    request_file,
    sandbox_process,
    warm_page_cache,
)

TARGET_RATIO = 1.3
TARGET_RSS_MIB = 100.0


class Upload(NamedTuple):
    """One upload: its wall time, the CPU time spent on each side, and (the backend's only) RSS."""

    seconds: float
    sender_cpu_s: float
    receiver_cpu_s: float = math.nan
    rss_before_mib: float = math.nan
    peak_rss_mib: float = math.nan


def timed_call(backend: Backend, call: Callable[[], Awaitable[object]]) -> dict[str, float]:
    """One whole ``call`` on ``backend``: its wall and CPU time and the RSS before it; then close the backend."""

    async def timed() -> dict[str, float]:
        try:
            rss_before = own_peak_rss_mb()
            cpu, start = cpu_seconds(), time.perf_counter()
            await call()
            return {"seconds": time.perf_counter() - start, "cpu_s": cpu_seconds() - cpu,
                    "rss_before_mib": rss_before}
        finally:
            await backend.aclose()

    return anyio.run(timed)


def timed_upload(backend: Backend, path: str) -> dict[str, float]:
    """One whole ``backend.upload`` of ``path``."""
    return timed_call(backend, lambda: backend.upload(Path(path), "openai"))


def upload(base_url: str, token: str, path: str) -> dict[str, float]:
    """The child's work: one upload (intent + PUT)."""
    return timed_upload(DigitalOceanBackend(api_key=token, base_url=base_url), path)


def upload_once(sandbox: SandboxProcess, size: int, send: Callable[[], Upload]) -> Upload:
    """``send`` one file; add the sandbox's CPU time meanwhile; check the one stored file, then delete it.

    (Deleting matters: a full run would otherwise fill gigabytes.)
    """
    received = process_cpu_seconds(sandbox.pid)
    sent = send()
    received = process_cpu_seconds(sandbox.pid) - received
    stored = list((sandbox.storage_dir / "uploads").iterdir())
    assert len(stored) == 1, f"expected one stored upload, found {[p.name for p in stored]}"
    assert stored[0].stat().st_size == size, f"upload incomplete: {stored[0].stat().st_size} of {size} bytes"
    stored[0].unlink()
    return sent._replace(receiver_cpu_s=received)


def compare(sandbox: SandboxProcess, child: Any, path: Path, size: int, runs: int,
            with_curl: Callable[[], Upload]) -> dict[str, list[Upload]]:
    """``runs`` uploads by curl and by the backend (in ``child``), alternating."""

    def with_backend() -> Upload:
        figures = child.run(sandbox.base_url, sandbox.token, str(path))
        return Upload(figures["seconds"], figures["cpu_s"], rss_before_mib=figures["rss_before_mib"],
                      peak_rss_mib=figures["peak_rss_mib"])

    uploads: dict[str, list[Upload]] = {"curl": [], "backend": []}
    for _ in range(runs):
        uploads["curl"].append(upload_once(sandbox, size, with_curl))
        uploads["backend"].append(upload_once(sandbox, size, with_backend))
    return uploads


def report(uploads: dict[str, list[Upload]], size: int, curl_label: str, backend_label: str) -> int:
    """Best times as ratios to curl's, the backend's peak RSS, throughput and CPU, and the targets."""
    best = {name: min(u.seconds for u in done) for name, done in uploads.items()}
    peak = max(u.peak_rss_mib for u in uploads["backend"])
    print_ratio(f"{curl_label} (baseline)", best["curl"], best["curl"])
    ratio_met = print_ratio(backend_label, best["backend"], best["curl"], TARGET_RATIO)
    rss_met = print_limit("backend peak RSS", peak, "MiB", TARGET_RSS_MIB)
    speed = {name: size / seconds / 1e6 for name, seconds in best.items()}
    print(f"throughput: curl {speed['curl']:,.0f} MB/s, backend {speed['backend']:,.0f} MB/s; "
          f"backend RSS before its first transfer {uploads['backend'][0].rss_before_mib:.0f} MiB")
    cpu = {name: f"{statistics.mean(u.sender_cpu_s for u in done):.2f} / "
                 f"{statistics.mean(u.receiver_cpu_s for u in done):.2f}" for name, done in uploads.items()}
    print(f"CPU s per transfer (mean), sender / sandbox receiving: curl {cpu['curl']}, backend {cpu['backend']}")
    print(f"targets: {'all met' if ratio_met and rss_met else 'MISSED'}")
    return 0


def main() -> int:
    sized = child_or_size(__doc__, upload, "use the 20 MB file (smoke test)")
    if sized is None:
        return 0
    requests, runs = sized
    path = request_file(requests)
    size = path.stat().st_size
    warm_page_cache(path)  # both senders read it from memory
    print_header("upload: DigitalOceanBackend.upload (intent + PUT) vs curl -T (PUT), to the sandbox over loopback",
                 f"{path.name}: {size / 1e6:.1f} MB, {requests:,} lines; best of {runs} runs each, "
                 "alternating")

    with sandbox_process() as sandbox, child_worker(__file__) as child:

        def with_curl() -> Upload:
            _, url = create_file_intent(sandbox)
            before = children_cpu_seconds()
            seconds = curl_seconds("-H", "Expect:", "-T", str(path), "-o", "/dev/null", url)
            return Upload(seconds, children_cpu_seconds() - before)

        uploads = compare(sandbox, child, path, size, runs, with_curl)
    return report(uploads, size, "curl -T", "backend upload (intent+PUT)")


if __name__ == "__main__":
    raise SystemExit(main())
