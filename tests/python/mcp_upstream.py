"""A small MCP server the gateway suites put behind Ferryman, built with the official Python
SDK: `echo`, `add`, `whoami` and `apikey` (the Authorization and X-API-Key headers it was
sent, so a test can see which credential reached it), and a tool whose name is too long to
prefix as it is.

    python mcp_upstream.py http PORT     Streamable HTTP on 127.0.0.1:PORT/mcp
    python mcp_upstream.py sse PORT      the legacy HTTP+SSE transport on 127.0.0.1:PORT/sse
    python mcp_upstream.py stdio         stdio

With MCP_UPSTREAM_EXTRA_TOOLS=N in its environment it also offers N tools `tool_000`, … (for
pagination).
"""

import os
import sys

from mcp.server.mcpserver import Context, MCPServer

server = MCPServer("ferryman-test-upstream")

LONG_NAME = "summarize_every_document_in_the_shared_drive_" + "x" * 30


@server.tool()
def echo(text: str) -> str:
    """Returns the text it was given."""
    return text


@server.tool()
def add(a: int, b: int) -> int:
    """Adds two integers."""
    return a + b


@server.tool()
def whoami(ctx: Context) -> str:
    """The Authorization header this server received."""
    headers = ctx.headers or {}
    return headers.get("authorization", "(none)")


@server.tool()
def apikey(ctx: Context) -> str:
    """The X-API-Key header this server received."""
    headers = ctx.headers or {}
    return headers.get("x-api-key", "(none)")


@server.tool(name=LONG_NAME)
def long_named() -> str:
    """A tool with a 75-character name."""
    return "long"


def numbered(i):
    def tool() -> str:
        return f"tool {i}"

    return tool


for i in range(int(os.environ.get("MCP_UPSTREAM_EXTRA_TOOLS", "0"))):
    server.add_tool(numbered(i), name=f"tool_{i:03}", description=f"Numbered tool {i}.")


if __name__ == "__main__":
    if sys.argv[1] == "http":
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    elif sys.argv[1] == "sse":
        server.run("sse", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run("stdio")
