"""Business logic between the MCP tools and the API client: preflight, batches, results, workspaces."""
