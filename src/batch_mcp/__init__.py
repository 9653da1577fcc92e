"""batch-mcp: an MCP server that runs LLM batch inference jobs for AI agents."""

__version__ = "0.1.0"
