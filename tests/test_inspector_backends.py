"""The canonical job (submit -> wait -> download) on every backend, through the MCP Inspector CLI.

One `batch-mcp serve --sandbox` process over streamable HTTP serves all five backends against their
emulators; the Inspector (a separate Node.js client, as a user would run it) drives each one, and on
Anthropic (the one backend that can delete) deletes the ended batch afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from test_stdio import _inspector, free_port, wait_for_port

BACKENDS = ("digitalocean", "openai", "deepinfra", "groq", "anthropic")
#: Each backend's request file and its size: Anthropic's own API takes only its own line format.
FILES = {"anthropic": ("data/reviews-anthropic.jsonl", 120)}
DEFAULT_FILE = ("data/tickets.jsonl", 300)
Inspect = Callable[..., dict[str, Any]]


@pytest.fixture(scope="module")
def inspect(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Inspect]:
    inspector = _inspector()
    if inspector is None:
        pytest.skip("MCP Inspector CLI not installed (.ci/run installs it)")
    workdir = tmp_path_factory.mktemp("inspector") / "work"
    (workdir / "data").mkdir(parents=True)
    from batch_mcp.demo import example_file

    for name in ("tickets.jsonl", "reviews-anthropic.jsonl"):
        (workdir / "data" / name).write_bytes(example_file(name).read_bytes())
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "batch_mcp", "serve", "--sandbox", "--transport", "streamable-http", "--port",
         str(port), "--allow-dir", str(workdir), "--state-dir", str(workdir.parent / "state")],
        env={**os.environ, "BATCH_MCP_LOG_LEVEL": "WARNING"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}/mcp"

    def run(tool: str, **arguments: Any) -> dict[str, Any]:
        done = subprocess.run([inspector, "--cli", url, "--transport", "http", "--method", "tools/call",
                               "--tool-name", tool, "--tool-args-json", json.dumps(arguments)],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        answer = json.loads(done.stdout)
        assert answer["isError"] is False, answer["content"][0]["text"]
        return answer["structuredContent"]

    try:
        wait_for_port(port)
        yield run
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.mark.parametrize("backend", BACKENDS)
def test_submit_wait_download_on_each_backend(inspect: Inspect, backend: str) -> None:
    path, requests = FILES.get(backend, DEFAULT_FILE)
    submitted = inspect("submit_batch", path=path, backend=backend)
    batch_id = submitted["batch"]["batch_id"]
    again = inspect("submit_batch", path=path, backend=backend)
    assert again["reused_existing_job"] and again["batch"]["batch_id"] == batch_id  # one submission, one job
    for _ in range(6):  # a wait that ends at its deadline is a normal answer: call again
        waited = inspect("wait_for_batch", batch_id=batch_id, timeout_s=20)
        if not waited["timed_out"]:
            break
    assert waited["batch"]["status"] == "completed"
    summary = inspect("download_batch_results", batch_id=batch_id, dest_dir=f"results/{backend}")
    assert summary["succeeded"] > requests * 0.8 and summary["succeeded"] + summary["failed"] == requests
    assert Path(summary["table_csv_path"]).is_file()
    assert batch_id.startswith(f"{backend}:")
    if backend == "anthropic":
        deleted = inspect("delete_batch", batch_id=batch_id)
        assert deleted["deleted_now"] and summary["output_path"] in deleted["kept_files"]
        assert Path(summary["output_path"]).is_file()
