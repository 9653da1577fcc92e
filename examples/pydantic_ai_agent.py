"""The canonical batch job through pydantic-ai's MCP client, with a scripted model (FunctionModel).

    pip install batch-mcp 'pydantic-ai-slim[mcp]==2.68.0'
    python pydantic_ai_agent.py                     # on the embedded sandbox (batch-mcp serve --sandbox)
    python pydantic_ai_agent.py --base-url URL      # against a standalone `batch-mcp sandbox`

The toolset is pydantic-ai's MCPToolset over stdio with its defaults (5 s to start, 5 min per answer; its
FastMCP client asks for progress, so each wait_for_batch call may last up to 50 s).
"""

from __future__ import annotations

import sys

from fastmcp.client.transports import StdioTransport
from pydantic_ai import Agent
from pydantic_ai.mcp import MCPToolset
from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from _canonical_job import PROMPT, Seen, Server, ToolCall, main, next_call


def scripted_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """Reads the tool results pydantic-ai sends back (as the text a model would get) and picks the next step."""
    history = [Seen(part.tool_name, part.model_response_str(), error=part.outcome != "success")
               for message in messages if isinstance(message, ModelRequest)
               for part in message.parts if isinstance(part, ToolReturnPart)]
    step = next_call(history)
    if isinstance(step, ToolCall):
        return ModelResponse(parts=[ToolCallPart(step.name, step.arguments)])
    return ModelResponse(parts=[TextPart(step)])


async def run(server: Server) -> str:
    toolset = MCPToolset(StdioTransport(server.command, server.args, env=server.env, cwd=server.cwd))
    agent = Agent(FunctionModel(scripted_model), toolsets=[toolset])
    async with agent:
        result = await agent.run(PROMPT)
    return result.output


if __name__ == "__main__":
    sys.exit(main("pydantic-ai", run))
