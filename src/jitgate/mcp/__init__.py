"""``jitgate mcp``: an MCP server through which a model asks for grants and calls AWS, without
ever seeing a credential. See :mod:`jitgate.mcp.server` and docs/mcp.md."""
