"""The built-in MCP server: the capabilities' tools for coding agents, over stdio (`kilnbase mcp`) and
streamable HTTP (`/mcp`), calling the services directly as the caller."""
