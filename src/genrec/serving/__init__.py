"""Serving genrec to other programs: tool schemas for chat assistants and the MCP server."""
