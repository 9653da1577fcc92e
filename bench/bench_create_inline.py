"""Anthropic's inline create (the requests streamed into ``POST /v1/messages/batches``), as a ratio to ``curl -T``.

Same method as bench_upload.py: the sandbox (``--backend anthropic``) runs in a process of its own;
``AnthropicBackend.create`` runs in a child process of its own, whose peak RSS is the backend's alone,
timed from the call to the parsed MessageBatch: it counts the file's requests, then streams
``{"requests": [...]}`` from the JSONL file in 1 MiB pieces. curl's figure is its own ``time_total``
for ``curl -T`` of the same body, prebuilt as a file. Both times include the sandbox reading, splitting
and checking every request before it answers, which is the same work for both. Runs alternate and each
figure is the best run. Targets: ratio <= 1.3, backend peak RSS <= 100 MiB (the body is ~200 MB).
Every create is checked to have arrived whole (its requests, one per line, are the input file
byte for byte), then its stored copy is deleted.

    python bench/bench_create_inline.py            # 50,000 requests of ~4 KB: a ~200 MB body
    python bench/bench_create_inline.py --quick    # 5,000 requests (~20 MB), as a smoke test
    BENCH_REQUESTS=20000 python bench/bench_create_inline.py   # any other size
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

from bench_upload import Upload, compare, report, timed_call

from batch_mcp.backends.anthropic import AnthropicBackend
from batch_mcp.backends.http import HttpOptions
from batch_mcp.domain import CreateSpec

from _common import (
    BENCH_DIR,
    child_or_size,
    child_worker,
    children_cpu_seconds,
    curl_seconds,
    print_header,
    request_file,
    sandbox_process,
    warm_page_cache,
)

BACKEND = "anthropic"
#: The sandbox checks a 200 MB body before it answers; on a slow machine that takes longer than a minute.
OPTIONS = HttpOptions(timeout_s=600.0)


def anthropic_file(requests: int) -> Path:
    """bench_validate's request file with each line as ``{custom_id, params}`` (system prompt as ``system``),
    the user message padded so each line keeps its ~4 KB: 50,000 lines make the same 199 MB file."""
    source = request_file(requests)
    path = BENCH_DIR / source.name.replace("openai-chat", "anthropic-messages")
    if not path.exists():
        print(f"generating {path} ...", flush=True)
        tmp = path.with_suffix(".tmp")
        with source.open(encoding="utf-8") as lines, tmp.open("w", encoding="utf-8") as out:
            for raw in lines:
                line = json.loads(raw)
                body = line["body"]
                system = [m["content"] for m in body["messages"] if m["role"] == "system"]
                messages = [m for m in body["messages"] if m["role"] != "system"]
                params = {"model": body["model"], "max_tokens": body["max_tokens"], "system": " ".join(system),
                          "messages": messages}
                converted = json.dumps({"custom_id": line["custom_id"], "params": params}, ensure_ascii=False)
                messages[-1]["content"] += " " * (len(raw.encode()) - 1 - len(converted.encode()))
                out.write(json.dumps({"custom_id": line["custom_id"], "params": params}, ensure_ascii=False) + "\n")
        tmp.replace(path)
    return path


def body_file(path: Path) -> Path:
    """The create body curl sends: the file's lines joined into ``{"requests": [...]}``, written once."""
    body = path.with_suffix(".body.json")
    if not body.exists():
        tmp = body.with_suffix(".tmp")
        with path.open("rb") as lines, tmp.open("wb") as out:
            out.write(b'{"requests":[')
            for index, raw in enumerate(lines):
                out.write((b"," if index else b"") + raw.strip())
            out.write(b"]}")
        tmp.replace(body)
    return body


def create(base_url: str, token: str, path: str) -> dict[str, float]:
    """The child's work: one inline create."""
    backend = AnthropicBackend(api_key=token, base_url=base_url, options=OPTIONS)
    spec = CreateSpec(input_ref=path, line_format="anthropic", client_token=uuid.uuid4().hex,
                      planned_at=datetime.now(UTC))
    return timed_call(backend, lambda: backend.create(spec))


def main() -> int:
    sized = child_or_size(__doc__, create, "use 5,000 requests (smoke test)")
    if sized is None:
        return 0
    requests, runs = sized
    if "BENCH_REQUESTS" in os.environ:
        requests = int(os.environ["BENCH_REQUESTS"])
    path = anthropic_file(requests)
    body = body_file(path)
    size = path.stat().st_size
    warm_page_cache(path)  # both senders read from memory
    warm_page_cache(body)
    print_header(f"inline create: AnthropicBackend.create vs curl -T, to the {BACKEND} sandbox over loopback",
                 f"{path.name}: {size / 1e6:.1f} MB, {requests:,} requests ({body.stat().st_size / 1e6:.1f} MB "
                 f"body); best of {runs} runs each, alternating")

    with sandbox_process(BACKEND) as sandbox, child_worker(__file__) as child:
        url = f"{sandbox.base_url}/v1/messages/batches"

        def with_curl() -> Upload:
            before = children_cpu_seconds()
            seconds = curl_seconds("-X", "POST", "-T", str(body), "-H", "Expect:", "-H", f"x-api-key: {sandbox.token}",
                                   "-H", "anthropic-version: 2023-06-01", "-H", "content-type: application/json",
                                   "-o", "/dev/null", url)
            return Upload(seconds, children_cpu_seconds() - before)

        creates = compare(sandbox, child, path, size, runs, with_curl)
    return report(creates, size, "curl -T (POST)", "backend create (inline)")


if __name__ == "__main__":
    raise SystemExit(main())
