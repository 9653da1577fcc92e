"""deploy/nginx/proxy.conf, as shipped, in front of two hosted replicas: a tenant's whole job goes through
nginx (progress streamed as it happens, the upload streamed through, links built on nginx's origin), and
the tenant's calls land on both replicas. Skipped where nginx is not installed (``apt-get install nginx-light``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2
import pytest
from test_hosted import KEY_A, call
from test_hosted_replicas import api_accepting, client, listening, replica

from test_stdio import free_port

ROOT = Path(__file__).resolve().parents[1]
NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)
if NGINX is None and os.environ.get("BATCH_MCP_REQUIRE_NGINX"):  # CI installs it: a missing one is a failure there
    raise RuntimeError("BATCH_MCP_REQUIRE_NGINX is set but nginx is not installed (apt-get install nginx-light)")
pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (apt-get install nginx-light)")


@contextmanager
def nginx(upstreams: list[str], folder: Path) -> Iterator[str]:
    port = free_port()
    folder.mkdir()
    servers = "".join(f"        server {upstream.removeprefix('http://')};\n" for upstream in upstreams)
    (folder / "nginx.conf").write_text(f"""
worker_processes 1;
error_log {folder}/error.log warn;
pid {folder}/nginx.pid;
events {{}}
http {{
    access_log off;
    client_body_temp_path {folder}/body;
    proxy_temp_path {folder}/proxy;
    upstream batch_mcp {{
{servers}        keepalive 8;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://batch_mcp;
            include {ROOT}/deploy/nginx/proxy.conf;
        }}
    }}
}}
""")
    command = [str(NGINX), "-p", str(folder), "-c", str(folder / "nginx.conf"), "-g", "daemon off;"]
    checked = subprocess.run([*command[:-2], "-t"], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    yield from listening(command, port, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def test_a_tenants_job_runs_through_nginx_across_two_replicas(workdir: Path, tmp_path: Path) -> None:
    tickets = (workdir / "data" / "tickets.jsonl").read_bytes()
    front_port = free_port()
    front = f"http://127.0.0.1:{front_port}"
    with api_accepting(KEY_A, requests_per_s=60) as api, \
            replica(api, tmp_path / "state", tmp_path / "one.log", BATCH_MCP_PUBLIC_URL=front) as one, \
            replica(api, tmp_path / "state", tmp_path / "two.log", BATCH_MCP_PUBLIC_URL=front) as two, \
            nginx([one, two], tmp_path / "nginx") as origin:
        http, alice = client(origin, KEY_A)
        async with http, alice:
            link = await call(alice, "create_upload_link")
            assert link["upload_url"].startswith(front)
            async with httpx2.AsyncClient() as curl:  # the link, through nginx (streamed, not buffered)
                put = await curl.put(link["upload_url"].replace(front, origin), content=tickets)
            assert put.status_code == 201, put.text
            batch_id = (await call(alice, "submit_batch", upload_id=link["upload_id"]))["batch"]["batch_id"]
            progress: list[float] = []

            async def heard(done: float, total: float | None, message: str | None) -> None:
                progress.append(done)

            for _ in range(20):
                waited = await alice.call_tool("wait_for_batch", {"batch_id": batch_id, "timeout_s": 30},
                                               progress_callback=heard)
                if waited.structured_content["batch"]["terminal"]:
                    break
            assert waited.structured_content["batch"]["status"] == "completed" and progress
            summary = await call(alice, "download_batch_results", batch_id=batch_id)
            async with httpx2.AsyncClient() as curl:
                table = await curl.get(summary["table_csv_path"].replace(front, origin),
                                       headers={"X-Api-Key-DigitalOcean": KEY_A})
            assert table.status_code == 200 and table.text.count("ticket-") >= 300
    for name in ("one.log", "two.log"):  # nginx spread the calls over both replicas
        assert "serving tools/call for digitalocean account" in (tmp_path / name).read_text(), name
