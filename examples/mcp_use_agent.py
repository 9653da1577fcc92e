"""The canonical batch job through mcp-use's MCPAgent and MCPClient, with a small scripted chat model.

    pip install mcp-use==1.7.1
    python mcp_use_agent.py                     # on the embedded sandbox (batch-mcp serve --sandbox)
    python mcp_use_agent.py --base-url URL      # against a standalone `batch-mcp sandbox`

mcp-use 1.7 needs mcp 1.x and batch-mcp mcp 2.3, so the server runs from an environment of its own: `uvx
batch-mcp`, or the command in BATCH_MCP_COMMAND (`/path/to/venv/bin/batch-mcp`). MCPClient keeps its defaults
(one server process for the run, no timeout on a call); its config takes no working directory, so the folder the
tools may use comes from the configuration (BATCH_MCP_ALLOWED_DIRS).
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("MCP_USE_ANONYMIZED_TELEMETRY", "false")  # offline: no telemetry upload (before the import)

from mcp_use import MCPAgent, MCPClient  # noqa: E402

from _canonical_job import MAX_MODEL_TURNS, PROMPT, Server, main  # noqa: E402
from _scripted_chat_model import ScriptedChatModel  # noqa: E402


async def run(server: Server) -> str:
    env = {**server.env, "BATCH_MCP_ALLOWED_DIRS": server.cwd}
    client = MCPClient({"mcpServers": {"batch": {"command": server.command, "args": server.args, "env": env}}})
    agent = MCPAgent(llm=ScriptedChatModel(), client=client, max_steps=MAX_MODEL_TURNS)
    try:
        return await agent.run(PROMPT)
    finally:
        await client.close_all_sessions()


if __name__ == "__main__":
    sys.exit(main("mcp-use", run))
