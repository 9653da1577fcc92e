"""Multipart upload (the OpenAI protocol's ``POST /files``) to the openai emulator, as a ratio to ``curl -F``.

Same method as bench_upload.py: the sandbox (``--backend openai``) runs in a process of its own; our
``OpenAICompatBackend.upload`` runs in a child process of its own, whose peak RSS is the backend's alone,
timed from the call to the parsed File object; curl's figure is its own ``time_total`` for
``curl -F file=@... -F purpose=batch``. Runs alternate and each figure is the best run. Targets:
ratio <= 1.3, peak RSS <= 100 MiB. Every upload is checked to have arrived whole, then deleted.

    python bench/bench_upload_multipart.py            # the 200 MB / 50,000-line request file
    python bench/bench_upload_multipart.py --quick    # its 20 MB version, as a smoke test
"""

from __future__ import annotations

import argparse
import statistics

from bench_upload import TARGET_RATIO, TARGET_RSS_MIB, Upload, timed_upload, upload_once

from batch_mcp.backends.openai_compat import VARIANTS, OpenAICompatBackend

from _common import (
    CHILD_FLAG,
    child_worker,
    children_cpu_seconds,
    curl_seconds,
    print_header,
    print_limit,
    print_ratio,
    request_file,
    sandbox_process,
    serve_parent,
    warm_page_cache,
)

BACKEND = "openai"


def upload(base_url: str, token: str, path: str) -> dict[str, float]:
    """The child's work: one multipart upload."""
    return timed_upload(OpenAICompatBackend(VARIANTS[BACKEND], api_key=token, base_url=base_url), path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="use the 20 MB file (smoke test)")
    parser.add_argument(CHILD_FLAG, action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        serve_parent(upload)
        return 0

    requests, runs = (5_000, 3) if args.quick else (50_000, 5)
    path = request_file(requests)
    size = path.stat().st_size
    warm_page_cache(path)  # both senders read it from memory
    print_header(f"multipart upload: OpenAICompatBackend.upload vs curl -F, to the {BACKEND} sandbox over loopback",
                 f"{path.name}: {size / 1e6:.1f} MB, {requests:,} lines; best of {runs} runs each, alternating")

    uploads: dict[str, list[Upload]] = {"curl": [], "backend": []}
    with sandbox_process(BACKEND) as sandbox, child_worker(__file__) as child:
        files_url = f"{sandbox.base_url}/files"

        def with_curl() -> Upload:
            before = children_cpu_seconds()
            seconds = curl_seconds("-H", f"Authorization: Bearer {sandbox.token}", "-H", "Expect:",
                                   "-F", f"file=@{path}", "-F", "purpose=batch", "-o", "/dev/null", files_url)
            return Upload(seconds, children_cpu_seconds() - before)

        def with_backend() -> Upload:
            figures = child.run(sandbox.base_url, sandbox.token, str(path))
            return Upload(figures["seconds"], figures["cpu_s"], rss_before_mib=figures["rss_before_mib"],
                          peak_rss_mib=figures["peak_rss_mib"])

        for _ in range(runs):
            uploads["curl"].append(upload_once(sandbox, size, with_curl))
            uploads["backend"].append(upload_once(sandbox, size, with_backend))

    best = {name: min(u.seconds for u in done) for name, done in uploads.items()}
    peak = max(u.peak_rss_mib for u in uploads["backend"])
    print_ratio("curl -F (baseline)", best["curl"], best["curl"])
    ratio_met = print_ratio("backend upload (multipart)", best["backend"], best["curl"], TARGET_RATIO)
    rss_met = print_limit("backend peak RSS", peak, "MiB", TARGET_RSS_MIB)
    speed = {name: size / seconds / 1e6 for name, seconds in best.items()}
    print(f"throughput: curl {speed['curl']:,.0f} MB/s, backend {speed['backend']:,.0f} MB/s; "
          f"backend RSS before its first upload {uploads['backend'][0].rss_before_mib:.0f} MiB")
    cpu = {name: f"{statistics.mean(u.sender_cpu_s for u in done):.2f} / "
                 f"{statistics.mean(u.receiver_cpu_s for u in done):.2f}" for name, done in uploads.items()}
    print(f"CPU s per upload (mean), sender / sandbox receiving: curl {cpu['curl']}, backend {cpu['backend']}")
    print(f"targets: {'all met' if ratio_met and rss_met else 'MISSED'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
