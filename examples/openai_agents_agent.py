"""The canonical batch job through openai-agents' MCP client, with its scripted test model (ScriptedModel).

    pip install batch-mcp openai-agents==0.24.0
    python openai_agents_agent.py                     # on the embedded sandbox (batch-mcp serve --sandbox)
    python openai_agents_agent.py --base-url URL      # against a standalone `batch-mcp sandbox`

MCPServerStdio keeps its defaults: a tool call that takes over 5 s fails, so wait_for_batch (given no
timeout_s, and asked for no progress) answers within about 3 s and the model calls it again. The tool schemas
are converted to strict mode, as OpenAI models want them; the summary says how many converted.
"""

from __future__ import annotations

import sys

from agents import Agent, RunContextWrapper, Runner, set_tracing_disabled
from agents.mcp import MCPServerStdio
from agents.testing import ModelCall, ModelStep, ScriptedModel, assistant_message, function_call

from _canonical_job import MAX_MODEL_TURNS, PROMPT, Seen, Server, ToolCall, main, next_call, text_of


def respond(call: ModelCall) -> list:
    """Reads the tool outputs in the model's input (Responses items) and picks the next step."""
    items = [] if isinstance(call.input, str) else call.input
    called = {item["call_id"]: item["name"] for item in items if item.get("type") == "function_call"}
    history = [Seen(called[item["call_id"]], text_of(item["output"]))
               for item in items if item.get("type") == "function_call_output"]
    step = next_call(history)
    if isinstance(step, ToolCall):
        return [function_call(step.name, step.arguments, call_id=f"call_{len(history)}")]
    return [assistant_message(step)]


async def run(server: Server) -> str:
    set_tracing_disabled(True)  # offline: no trace upload
    params = {"command": server.command, "args": server.args, "env": server.env, "cwd": server.cwd}
    async with MCPServerStdio(params, name="batch") as batch:
        agent = Agent(name="batch agent", model=ScriptedModel([ModelStep(responder=respond)] * MAX_MODEL_TURNS),
                      mcp_servers=[batch], mcp_config={"convert_schemas_to_strict": True})
        tools = await agent.get_mcp_tools(RunContextWrapper(None))
        result = await Runner.run(agent, PROMPT, max_turns=MAX_MODEL_TURNS)
    strict = sum(tool.strict_json_schema for tool in tools)
    return f"{result.final_output}; {strict} of {len(tools)} tools strict"


if __name__ == "__main__":
    sys.exit(main("openai-agents", run))
