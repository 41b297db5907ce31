"""The Python MCP SDK's 1.x client (the `initialize`/session protocol, 2025-11-25), run in its
own virtualenv (`.venv-mcp1`, made by tests/setup.sh) because the suite's own `mcp` is 2.x.

    python mcp1_client.py URL KEY TOOL ARGUMENTS_JSON

Prints one JSON object: the protocol version and server the gateway announced, every tool name
(all pages), and the tool's answer.
"""

import asyncio
import json
import sys

from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client


async def main(url, key, tool, arguments):
    async with streamablehttp_client(url, headers={"Authorization": f"Bearer {key}"}) as (read, write, _):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            names, cursor = [], None
            while True:
                page = await session.list_tools(cursor=cursor)
                names += [t.name for t in page.tools]
                cursor = page.nextCursor
                if not cursor:
                    break
            result = await session.call_tool(tool, arguments)
            return {
                "protocol_version": init.protocolVersion,
                "server": init.serverInfo.name,
                "tools": names,
                "is_error": bool(result.isError),
                "text": "".join(getattr(c, "text", "") for c in result.content),
            }


if __name__ == "__main__":
    out = asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])))
    print(json.dumps(out))
