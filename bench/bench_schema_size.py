"""What ``tools/list`` costs a client that forwards it to a model: bytes of the listing, ours against the SDK's.

For a DigitalOcean-only server and for one with all four backends configured, the ``tools/list`` result as it
goes over the wire (compact JSON): the SDK's own listing, whose output schemas it derives from the tools'
return models, against the lean one the server sends (tools/output_schemas.py). Both are taken from the same
server in the same run, so the ratio is what the rewrite saves. Tokens are estimated at 4 bytes each.

    python bench/bench_schema_size.py
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager

import anyio
from mcp.server import MCPServer
from mcp.types import ListToolsResult, Tool

from batch_mcp.config import Settings
from batch_mcp.server import build_server, open_app_state

from _common import BENCH_DIR, print_header

NOWHERE = "http://127.0.0.1:9"  # configured, never called: listing tools sends nothing to a backend
OTHER_BACKENDS = {"OPENAI_API_KEY": "sk-bench", "OPENAI_BASE_URL": f"{NOWHERE}/v1",
                  "DEEPINFRA_TOKEN": "di-bench", "DEEPINFRA_BASE_URL": f"{NOWHERE}/v1/openai",
                  "GROQ_API_KEY": "gsk-bench", "GROQ_BASE_URL": f"{NOWHERE}/openai/v1"}
UNSET = (*OTHER_BACKENDS, "DEEPINFRA_API_KEY", "BATCH_MCP_BACKEND")


@contextmanager
def backends_in_env(others: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.pop(name) for name in UNSET if name in os.environ}
    os.environ.update(others)
    try:
        yield
    finally:
        for name in others:
            os.environ.pop(name, None)
        os.environ.update(saved)


def wire_bytes(tools: list[Tool], *, outputs_only: bool = False) -> int:
    if outputs_only:
        return sum(len(json.dumps(tool.output_schema, separators=(",", ":"))) for tool in tools)
    dumped = ListToolsResult(tools=tools).model_dump(mode="json", by_alias=True, exclude_none=True)
    return len(json.dumps(dumped, separators=(",", ":")))


async def listings() -> tuple[list[Tool], list[Tool]]:
    """The SDK's own listing and the one the server sends, of one server."""
    state_dir = BENCH_DIR / "schema-state"
    settings = Settings(token="bench-token", base_url=NOWHERE, allowed_dirs=[BENCH_DIR], state_dir=state_dir)
    async with open_app_state(settings) as state:
        server = build_server(state)
        return await MCPServer.list_tools(server), await server.list_tools()


def report(label: str, derived: list[Tool], lean: list[Tool]) -> float:
    print(f"\n{label}: {len(lean)} tools")
    for what, outputs_only in (("tools/list result", False), ("output schemas only", True)):
        before, after = wire_bytes(derived, outputs_only=outputs_only), wire_bytes(lean, outputs_only=outputs_only)
        print(f"  {what:<20} SDK-derived {before:7,} B (~{before // 4:6,} tokens)   "
              f"lean {after:7,} B (~{after // 4:6,} tokens)   ratio {after / before:.3f}")
    return wire_bytes(lean) / wire_bytes(derived)


def main() -> int:
    print_header("tools/list size: the SDK-derived output schemas against the lean ones the server lists",
                 "13 tools; a DigitalOcean-only server, and one with OpenAI, DeepInfra and Groq configured too")
    BENCH_DIR.mkdir(exist_ok=True)
    ratios = []
    for label, others in (("DigitalOcean only", {}), ("four backends", OTHER_BACKENDS)):
        with backends_in_env(others):
            ratios.append(report(label, *anyio.run(listings)))
    print(f"\nhalved (ratio <= 0.5) in both: {'met' if max(ratios) <= 0.5 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
