"""An MCP server over stdio exposing genrec's tools (``genrec mcp --catalog FILE``).

Needs the optional extra ``genrec[mcp]`` (the official ``mcp`` package, 2.x). Tool definitions
and argument validation come from ``genrec.tools``. A malformed or oversized call, an unknown
item, or anything a task raises comes back as a tool error (``isError``) with a clear message;
the server keeps serving. Tasks run on one model thread, as ``genrec serve``'s do, so the event
loop stays responsive: the same thread for every call, since bf16 products on AMX from several
threads slowed all of them (eval/notes/2026-12-07-lean-decoder.md).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from ..errors import require
from .tools import TOOLS, ToolError, call_tool, model_thread, package_version, tool_definitions

__all__ = ["build_server", "serve_stdio"]

log = logging.getLogger(__name__)


def _mcp():
    require("mcp", "mcp", "the MCP server")
    import anyio
    from mcp import types
    from mcp.server.lowlevel import Server
    from mcp.server.stdio import stdio_server

    return anyio, types, Server, stdio_server


def build_server(rec: Any):
    """A low-level MCP server whose tools run on ``rec`` (a Recommender)."""
    anyio, types, Server, _ = _mcp()
    definitions = {d["function"]["name"]: d["function"] for d in tool_definitions(rec.limits)}
    executor = model_thread()

    async def list_tools(ctx: Any, params: Any) -> Any:
        return types.ListToolsResult(
            tools=[
                types.Tool(name=name, description=d["description"], input_schema=d["parameters"])
                for name, d in definitions.items()
            ]
        )

    async def call(ctx: Any, params: Any) -> Any:
        try:
            job = executor.submit(call_tool, rec, params.name, params.arguments)
            result = await anyio.to_thread.run_sync(job.result)  # (waits off the event loop)
        except ToolError as exc:
            return _error(types, str(exc))
        except Exception as exc:  # a bug must not take the server down: report it as a tool error
            log.exception("tool %s failed", params.name)
            return _error(types, f"{params.name}: internal error: {type(exc).__name__}: {exc}")
        text = json.dumps(result, ensure_ascii=False)
        return types.CallToolResult(
            content=[types.TextContent(text=text)], structured_content={"result": result}, is_error=False
        )

    return Server(
        "genrec",
        version=package_version(),
        instructions=(
            f"Recommends items from the catalog {rec.catalog.name!r} ({len(rec.catalog)} {rec.catalog.kind}s). "
            f"Tools: {', '.join(TOOLS)}. Items are referred to by item ID or title."
        ),
        on_list_tools=list_tools,
        on_call_tool=call,
    )


def _error(types: Any, message: str) -> Any:
    return types.CallToolResult(content=[types.TextContent(text=message)], is_error=True)


def serve_stdio(rec: Any) -> None:
    """Serve MCP over this process's stdin and stdout until the client disconnects."""
    anyio, _, _, stdio_server = _mcp()
    server = build_server(rec)

    async def main() -> None:
        async with stdio_server() as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())

    anyio.run(main)
