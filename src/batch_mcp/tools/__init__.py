"""MCP wiring: tools, resources and prompts over the batch service."""

from mcp.server import MCPServer

from batch_mcp.tools.batch_tools import register_batch_tools
from batch_mcp.tools.context import AppState
from batch_mcp.tools.resources import register_backends, register_prompts, register_resources, register_subscriptions


def register_all(mcp: MCPServer, state: AppState) -> None:
    hosted = state.hosting is not None
    register_batch_tools(mcp, state.registry, hosted=hosted)
    register_resources(mcp, state)
    register_backends(mcp, state)
    register_subscriptions(mcp, state)
    register_prompts(mcp, hosted=hosted)
