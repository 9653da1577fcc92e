"""Download and summary of a whole batch's results: throughput as a ratio to curl, and peak RSS.

Generates (once, into .bench/) the results of the 50,000 requests of bench_validate.py's file as the
service writes them (compact UTF-8 JSON lines): an output file of ~66 MB, one chat completion with a
~0.8 KB answer per succeeded request in completion order, and an errors file for the 1% that failed.
A static file server in its own process (``python -m http.server``) serves both; curl and the backend
fetch the same URLs from it, as the presigned result links they stand for. (The sandbox's storage
route serves only results of jobs it ran itself, and running 50,000 requests through it would measure
the sandbox, not the backend.)

In a child process of its own, so that the peak RSS is the backend's alone, each run times

    download  DigitalOceanBackend.download() of both ResultSources, each into a NewFile's partial file
              as the services write them, against curl fetching the same URLs
    summary   ResultIndex + build_results_table joined with the 50,000-line request file: the CSV and
              JSONL tables and counts that download_batch_results produces after downloading

Runs alternate with curl's; each figure is the best run. Target: peak RSS <= 100 MiB.

    python bench/bench_download.py            # 50,000 requests: ~66 MB of results, 199 MB of requests
    python bench/bench_download.py --quick    # 5,000 requests, as a smoke test
"""

from __future__ import annotations

import filecmp
import hashlib
import json
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import anyio
from bench_validate import MODELS, sentences

from batch_mcp.backends.digitalocean import DigitalOceanBackend
from batch_mcp.domain import ResultSource
from batch_mcp.services.results import ResultIndex, build_results_table, request_prompts
from batch_mcp.services.workspace import NewFile

from _common import (
    BENCH_DIR,
    background,
    child_or_size,
    child_worker,
    curl_seconds,
    free_port,
    own_peak_rss_mb,
    print_header,
    print_limit,
    print_ratio,
    request_file,
    warm_page_cache,
)

TARGET_RSS_MIB = 100.0
FAILED_SHARE = 0.01
ANSWER_CHARS = (600, 1_000)
ERRORS = (("context_length_exceeded", "This model's maximum context length was exceeded by the request."),
          ("server_error", "The server had an error while processing your request."))
_compact = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _key(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:24]


def result_line(rng: random.Random, pool: list[str], index: int) -> tuple[bool, dict[str, Any]]:
    """``(succeeded, line)`` for request ``index``, shaped like the service's (and the sandbox's) lines."""
    custom_id, key = f"req-{index:06d}", _key(index)
    if rng.random() < FAILED_SHARE:
        code, message = rng.choice(ERRORS)
        return False, {"id": f"batch_req_{key}", "custom_id": custom_id, "response": None,
                       "error": {"code": code, "message": message}}
    answer, length = "", rng.randint(*ANSWER_CHARS)
    while len(answer) < length:
        answer += rng.choice(pool)
    prompt_tokens, completion_tokens = rng.randint(900, 1_100), len(answer) // 4
    body = {"id": f"chatcmpl-{key}", "object": "chat.completion", "created": 1_767_225_600 + index // 50,
            "model": MODELS[index % len(MODELS)],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer, "refusal": None},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}
    response = {"status_code": 200, "request_id": f"req_{_key(key)}", "body": body}
    return True, {"id": f"batch_req_{key}", "custom_id": custom_id, "response": response, "error": None}


def generate_results(folder: Path, requests: int) -> None:
    """Write output.jsonl and errors.jsonl into ``folder``, atomically (a partial pair is never reused).

    Lines come in completion order: roughly input order, jittered, as a batch finishes them.
    """
    rng = random.Random(requests)
    pool = sentences(rng, 2_000)
    order = sorted(range(requests), key=lambda i: i + rng.uniform(0, 2_000))
    tmp = folder.with_suffix(".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with (tmp / "output.jsonl").open("w", encoding="utf-8") as output, \
            (tmp / "errors.jsonl").open("w", encoding="utf-8") as errors:
        for index in order:
            succeeded, line = result_line(rng, pool, index)
            (output if succeeded else errors).write(_compact(line) + "\n")
    tmp.replace(folder)


def download_and_summarise(output_url: str, errors_url: str, requests: str, workdir: str) -> dict[str, Any]:
    """The child's work: both downloads, then the results table, each timed; the table's counts to check."""
    folder = Path(workdir)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    output, errors = folder / "output.jsonl", folder / "errors.jsonl"

    sources = [(ResultSource(kind="output", locator="bench", shareable_url=output_url), output),
               (ResultSource(kind="errors", locator="bench", shareable_url=errors_url), errors)]

    async def download() -> float:
        backend = DigitalOceanBackend(api_key="unused-by-storage")
        try:
            start = time.perf_counter()
            for source, target in sources:
                with NewFile(target) as new:  # as the services write them: a partial file, then moved into place
                    await backend.download(source, new.out)
            return time.perf_counter() - start
        finally:
            await backend.aclose()

    download_s = anyio.run(download)
    rss_after_download = own_peak_rss_mb()
    start = time.perf_counter()
    tables = folder / "results.csv", folder / "results.jsonl"
    table = build_results_table(ResultIndex([errors, output]), request_prompts(Path(requests)), *tables)
    return {"download_s": download_s, "summary_s": time.perf_counter() - start,
            "rss_after_download_mib": rss_after_download,
            "counts": [table.succeeded, table.failed, table.missing],
            "table_bytes": sum(path.stat().st_size for path in tables)}


def main() -> int:
    sized = child_or_size(__doc__, download_and_summarise, "use 5,000 requests (smoke test)", full_runs=3)
    if sized is None:
        return 0
    requests, runs = sized
    request_path = request_file(requests)
    served = BENCH_DIR / f"openai-results-{requests}"
    if not served.exists():
        print(f"generating {served} ...", flush=True)
        generate_results(served, requests)
    files = [served / "output.jsonl", served / "errors.jsonl"]
    result_bytes = sum(f.stat().st_size for f in files)
    with files[0].open("rb") as lines:
        succeeded = sum(1 for _ in lines)
    for path in (*files, request_path):
        warm_page_cache(path)
    print_header("download + summary: DigitalOceanBackend.download and build_results_table vs curl",
                 f"output {files[0].stat().st_size / 1e6:.1f} MB ({succeeded:,} lines) + errors "
                 f"{files[1].stat().st_size / 1e3:.0f} kB ({requests - succeeded:,} lines), joined with "
                 f"{request_path.name} ({request_path.stat().st_size / 1e6:.0f} MB); "
                 f"best of {runs} runs each")

    port = free_port()
    urls = [f"http://127.0.0.1:{port}/{f.name}" for f in files]
    curl_dir, backend_dir = BENCH_DIR / "download-curl", BENCH_DIR / "download-backend"
    curl_dir.mkdir(exist_ok=True)
    curl_args = [arg for url, f in zip(urls, files, strict=True)
                 for arg in ("-o", str(curl_dir / f.name), url)]
    server = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
              "--directory", str(served)]
    curl_times, backend_runs = [], []
    with background("http-server", server, port), child_worker(__file__) as child:
        for _ in range(runs):
            curl_times.append(curl_seconds(*curl_args))
            backend_runs.append(child.run(*urls, str(request_path), str(backend_dir)))
    for f in files:
        assert filecmp.cmp(backend_dir / f.name, f, shallow=False), f"backend download of {f.name} differs"
        assert filecmp.cmp(curl_dir / f.name, f, shallow=False), f"curl download of {f.name} differs"
    shutil.rmtree(curl_dir)
    shutil.rmtree(backend_dir)

    counts = backend_runs[0]["counts"]
    assert counts == [succeeded, requests - succeeded, 0], counts
    baseline = min(curl_times)
    download = min(run["download_s"] for run in backend_runs)
    summary = min(run["summary_s"] for run in backend_runs)
    peak = max(run["peak_rss_mib"] for run in backend_runs)
    print_ratio("curl download (baseline)", baseline, baseline)
    print_ratio("backend download", download, baseline)
    print(f"{'summary (results table)':<28} {summary:8.3f} s   {counts[0]:,} succeeded, "
          f"{counts[1]:,} failed, {counts[2]} missing; tables {backend_runs[0]['table_bytes'] / 1e6:.0f} MB")
    print_ratio("download + summary", download + summary, baseline)
    rss_met = print_limit("backend peak RSS", peak, "MiB", TARGET_RSS_MIB)
    read = result_bytes + request_path.stat().st_size
    print(f"throughput: curl {result_bytes / baseline / 1e6:,.0f} MB/s, "
          f"backend {result_bytes / download / 1e6:,.0f} MB/s; "
          f"summary {read / summary / 1e6:,.0f} MB/s of results + requests read; "
          f"RSS after downloading {backend_runs[0]['rss_after_download_mib']:.0f} MiB")
    print(f"targets: {'all met' if rss_met else 'MISSED'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
