"""The canonical batch job through fast-agent's MCP client, with a scripted model in place of an LLM.

    pip install batch-mcp fast-agent-mcp==0.10.48      # Python 3.12 or newer
    python fast_agent_agent.py                     # on the embedded sandbox (batch-mcp serve --sandbox)
    python fast_agent_agent.py --base-url URL      # against a standalone `batch-mcp sandbox`

The server is declared in fastagent.config.yaml, as fast-agent users write it, with fast-agent's defaults (one
server process for the run, no read timeout, a ping every 30 s). The scripted model (a FastAgentLLM, like
fast-agent's own passthrough model) reads the tool results fast-agent would send an LLM and picks each call.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from fast_agent import FastAgent
from fast_agent.llm.fastagent_llm import FastAgentLLM
from fast_agent.llm.provider_types import Provider
from fast_agent.mcp.helpers.content_helpers import tool_result_text_for_llm
from fast_agent.mcp.prompt import Prompt
from fast_agent.types import PromptMessageExtended
from fast_agent.types.llm_stop_reason import LlmStopReason
from mcp import CallToolRequest
from mcp_types import CallToolRequestParams

from _canonical_job import PROMPT, Seen, Server, main, next_call


class ScriptedLLM(FastAgentLLM):
    """Asks for the tool call next_call picks from the tool results in the conversation so far."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(name="scripted", provider=Provider.FAST_AGENT, **kwargs)
        self.calls: dict[str, str] = {}  # tool call id -> tool name

    async def _apply_prompt_provider_specific(self, multipart_messages: list[PromptMessageExtended],
                                              request_params: Any = None, tools: Any = None,
                                              is_template: bool = False) -> PromptMessageExtended:
        self.history.extend(multipart_messages, is_prompt=is_template)
        history = [Seen(self.calls[call_id], tool_result_text_for_llm(result), error=result.is_error)
                   for message in self.history.get() for call_id, result in (message.tool_results or {}).items()]
        step = next_call(history)
        if isinstance(step, str):
            return Prompt.assistant(step, stop_reason=LlmStopReason.END_TURN)
        call_id = f"call_{len(history)}"
        self.calls[call_id] = step.name
        request = CallToolRequest(params=CallToolRequestParams(name=step.name, arguments=step.arguments))
        return Prompt.assistant(tool_calls={call_id: request}, stop_reason=LlmStopReason.TOOL_USE)

    def _convert_extended_messages_to_provider(self, messages: list[PromptMessageExtended]) -> list[Any]:
        return []  # no provider API behind it


def write_config(server: Server) -> Path:
    """fastagent.config.yaml declaring the server (JSON is YAML)."""
    config = Path(server.cwd) / "fastagent.config.yaml"
    batch = {"command": server.command, "args": server.args, "env": server.env, "cwd": server.cwd}
    config.write_text(json.dumps({"mcp": {"servers": {"batch": batch}}}))
    return config


async def run(server: Server) -> str:
    # its home (sessions, history) in the work folder, as in a project of the user's
    fast = FastAgent("batch example", config_path=str(write_config(server)), home=Path(server.cwd) / ".fast-agent",
                     parse_cli_args=False, quiet=True)

    @fast.agent(name="batch", servers=["batch"], model="passthrough")
    async def batch() -> None: ...

    async with fast.run() as app:
        await app.batch.attach_llm(ScriptedLLM)
        return await app.batch.send(PROMPT)  # its tool loop's default allows 9,999 iterations


if __name__ == "__main__":
    sys.exit(main("fast-agent", run))
