"""What hosted mode adds to a tool call: a registry of the caller's backends opened for the call, an HMAC per
key, and a scoped store view. ``get_batch`` on one job, over streamable HTTP (the SDK's client on the
server's ASGI app in memory), on a local server and on a hosted one against the same kind of sandbox,
alternating blocks of calls so both see the same load. No target: the ratio is the hosted overhead.

    python bench/bench_hosted.py            # 7 blocks of 15 calls (under the sandbox's 250 calls a minute)
    python bench/bench_hosted.py --quick    # 3 blocks of 10
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from batch_mcp.config import Settings
from batch_mcp.demo import example_file
from batch_mcp.server import build_server, http_app, open_app_state

from _common import print_header, print_ratio

SECRET = "bench-account-secret-0123456789abcdef0123"
KEY = "dop_v1_bench-tenant-key"


@asynccontextmanager
async def server(settings: Settings, headers: dict[str, str]) -> AsyncIterator[tuple[Client, httpx2.AsyncClient]]:
    async with AsyncExitStack() as stack:
        state = await stack.enter_async_context(open_app_state(settings))
        mcp = build_server(state)
        app = http_app(mcp, "streamable-http", "127.0.0.1", None, hosted=settings.hosted)
        await stack.enter_async_context(mcp.session_manager.run())
        http = await stack.enter_async_context(httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app),
                                                                   headers=headers, timeout=60))
        yield await stack.enter_async_context(Client(streamable_http_client("http://127.0.0.1:8000/mcp",
                                                                            http_client=http))), http


async def block(client: Client, batch_id: str, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        result = await client.call_tool("get_batch", {"batch_id": batch_id})
        assert not result.is_error, result.content
    return (time.perf_counter() - start) / calls


async def main(blocks: int, calls: int) -> None:
    print_header("get_batch over streamable HTTP: a local server, and a hosted one (the caller's key per request)",
                 f"one 300-request job on each embedded sandbox; {blocks} alternating blocks of {calls} calls")
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        (root / "work").mkdir()
        tickets = root / "work" / "tickets.jsonl"
        tickets.write_bytes(example_file("tickets.jsonl").read_bytes())
        local = Settings(sandbox=True, allowed_dirs=[root / "work"], state_dir=root / "local")
        hosted = Settings(sandbox=True, hosted=True, account_secret=SECRET, state_dir=root / "hosted")
        async with server(local, {}) as (plain, _), server(hosted, {"X-Api-Key-DigitalOcean": KEY}) as (tenant, http):
            plain_id = str((await plain.call_tool("submit_batch", {"path": str(tickets)}))
                           .structured_content["batch"]["batch_id"])
            tenant_id = await hosted_job(tenant, http, tickets)
            times: dict[str, list[float]] = {"local": [], "hosted": []}
            for _ in range(blocks):
                times["local"].append(await block(plain, plain_id, calls))
                times["hosted"].append(await block(tenant, tenant_id, calls))
    baseline = statistics.median(times["local"])
    print_ratio("get_batch, local (median)", baseline, baseline)
    print_ratio("get_batch, hosted (median)", statistics.median(times["hosted"]), baseline)


async def hosted_job(client: Client, http: httpx2.AsyncClient, tickets: Path) -> str:
    """A job of the hosted tenant: its upload link PUT into the same in-memory app."""
    link = (await client.call_tool("create_upload_link", {})).structured_content
    answer = await http.put(link["upload_url"], content=tickets.read_bytes())
    assert answer.status_code == 201, answer.text
    result = await client.call_tool("submit_batch", {"upload_id": link["upload_id"]})
    return str(result.structured_content["batch"]["batch_id"])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    quick = parser.parse_args().quick
    anyio.run(main, 3 if quick else 7, 10 if quick else 15)
