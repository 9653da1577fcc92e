"""The canonical batch job through LangGraph and langchain-mcp-adapters, with a small scripted chat model.

    pip install langchain-mcp-adapters==0.3.2 langgraph==1.2.22 langchain-core==1.8.3
    python langgraph_agent.py                     # on the embedded sandbox (batch-mcp serve --sandbox)
    python langgraph_agent.py --base-url URL      # against a standalone `batch-mcp sandbox`

langchain-mcp-adapters 0.3 needs mcp 1.x and batch-mcp mcp 2.3, so the server runs from an environment of
its own: `uvx batch-mcp`, or the command in BATCH_MCP_COMMAND (`/path/to/venv/bin/batch-mcp`).
MultiServerMCPClient.get_tools() keeps its default, a server process per tool call: each finds the jobs of
the calls before it in the state folder they share.
"""

from __future__ import annotations

import sys

from langchain_core.messages import BaseMessage
from langchain_mcp_adapters.client import MultiServerMCPClient
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

from _canonical_job import MAX_MODEL_TURNS, PROMPT, Server, main
from _scripted_chat_model import ScriptedChatModel


async def run(server: Server) -> str:
    client = MultiServerMCPClient({"batch": {"transport": "stdio", "command": server.command, "args": server.args,
                                             "env": server.env, "cwd": server.cwd}})
    tools = await client.get_tools()
    model = ScriptedChatModel().bind_tools(tools)

    async def agent(state: MessagesState) -> dict[str, list[BaseMessage]]:
        return {"messages": [await model.ainvoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("agent", agent)
    graph.add_node("tools", ToolNode(tools))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    result = await graph.compile().ainvoke({"messages": [("user", PROMPT)]},
                                           {"recursion_limit": 2 * MAX_MODEL_TURNS + 1})
    return result["messages"][-1].content


if __name__ == "__main__":
    sys.exit(main("langgraph", run))
