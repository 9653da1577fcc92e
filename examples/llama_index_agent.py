"""The canonical batch job through LlamaIndex's MCP tools, with its scripted test model (MockFunctionCallingLLM).

    pip install batch-mcp llama-index-tools-mcp==0.6.0
    python llama_index_agent.py                     # on the embedded sandbox (batch-mcp serve --sandbox)
    python llama_index_agent.py --base-url URL      # against a standalone `batch-mcp sandbox`

BasicMCPClient keeps its defaults: a server process per tool call (each finds the jobs of the calls before it
in the state folder they share) and 30 s per answer, so wait_for_batch (given no timeout_s, and asked for no
progress) answers within about 3 s and the agent calls it again. It takes no working directory, so the
folder the tools may use comes from the configuration (BATCH_MCP_ALLOWED_DIRS).
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Sequence
from typing import Any

from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.base.llms.types import ChatMessage, MessageRole, TextBlock, ToolCallBlock
from llama_index.core.llms.mock import MockFunctionCallingLLM
from llama_index.tools.mcp import BasicMCPClient, McpToolSpec

from _canonical_job import MAX_MODEL_TURNS, PROMPT, Seen, Server, ToolCall, main, next_call

#: FunctionAgent shows the model ``str()`` of the MCP result: ``meta=None content=[TextContent(type='text',
#: text='{"batch_id": ...}', ...)] structured_content={...} is_error=False``.
TEXT_BLOCK = re.compile(r"""TextContent\(type='text', text=('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")""")


def seen(tool: str, shown: str) -> Seen:
    """A tool result as the model reads it from that repr: its first text block, and whether it is an error."""
    block = TEXT_BLOCK.search(shown)
    return Seen(tool, ast.literal_eval(block[1]) if block else shown, error=shown.endswith("is_error=True"))


def respond(messages: Sequence[ChatMessage], **kwargs: Any) -> ChatMessage:
    """Reads the tool messages FunctionAgent hands the model and picks the next step."""
    history = [seen(message.additional_kwargs["tool_call_id"].split(":")[0], message.content or "")
               for message in messages if message.role == MessageRole.TOOL]
    step = next_call(history)
    if isinstance(step, ToolCall):
        call = ToolCallBlock(tool_call_id=f"{step.name}:{len(history)}", tool_name=step.name,
                             tool_kwargs=step.arguments)
        return ChatMessage(role=MessageRole.ASSISTANT, blocks=[call])
    return ChatMessage(role=MessageRole.ASSISTANT, blocks=[TextBlock(text=step)])


async def run(server: Server) -> str:
    client = BasicMCPClient(server.command, args=server.args,
                            env={**server.env, "BATCH_MCP_ALLOWED_DIRS": server.cwd})
    tools = await McpToolSpec(client).to_tool_list_async()
    agent = FunctionAgent(tools=tools, llm=MockFunctionCallingLLM(response_generator=respond))
    result = await agent.run(PROMPT, max_iterations=MAX_MODEL_TURNS)
    return str(result.response.content)


if __name__ == "__main__":
    sys.exit(main("llama-index", run))
