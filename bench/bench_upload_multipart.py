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

from bench_upload import Upload, compare, report, timed_upload

from batch_mcp.backends.openai_compat import VARIANTS, OpenAICompatBackend

from _common import (
    child_or_size,
    child_worker,
    children_cpu_seconds,
    curl_seconds,
    print_header,
    request_file,
    sandbox_process,
    warm_page_cache,
)

BACKEND = "openai"


def upload(base_url: str, token: str, path: str) -> dict[str, float]:
    """The child's work: one multipart upload."""
    return timed_upload(OpenAICompatBackend(VARIANTS[BACKEND], api_key=token, base_url=base_url), path)


def main() -> int:
    sized = child_or_size(__doc__, upload, "use the 20 MB file (smoke test)")
    if sized is None:
        return 0
    requests, runs = sized
    path = request_file(requests)
    size = path.stat().st_size
    warm_page_cache(path)  # both senders read it from memory
    print_header(f"multipart upload: OpenAICompatBackend.upload vs curl -F, to the {BACKEND} sandbox over loopback",
                 f"{path.name}: {size / 1e6:.1f} MB, {requests:,} lines; best of {runs} runs each, alternating")

    with sandbox_process(BACKEND) as sandbox, child_worker(__file__) as child:
        files_url = f"{sandbox.base_url}/files"

        def with_curl() -> Upload:
            before = children_cpu_seconds()
            seconds = curl_seconds("-H", f"Authorization: Bearer {sandbox.token}", "-H", "Expect:",
                                   "-F", f"file=@{path}", "-F", "purpose=batch", "-o", "/dev/null", files_url)
            return Upload(seconds, children_cpu_seconds() - before)

        uploads = compare(sandbox, child, path, size, runs, with_curl)
    return report(uploads, size, "curl -F", "backend upload (multipart)")


if __name__ == "__main__":
    raise SystemExit(main())
