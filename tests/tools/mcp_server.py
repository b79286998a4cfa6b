"""An MCP server for the tests, written with the official SDK (``mcp.server.mcpserver.MCPServer``).

Run it as ``python -m tests.tools.mcp_server stdio`` or ``python -m tests.tools.mcp_server http PORT``
(streamable HTTP at ``http://127.0.0.1:PORT/mcp``).

Its tools: ``add``, ``echo``, ``sleep`` (a tool that hangs), ``block`` (one that hangs for a minute, with
no arguments), ``fail`` (a tool that raises) and
``env_leak`` (the names of the variables in its environment, to show what a server is given).
When the file named by ``MCP_TEST_EXTRA_TOOL_FILE`` exists at start, it also offers ``multiply``:
a test changes the server's tools by writing that file, then refreshes.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server: MCPServer = MCPServer("platform-tests")


@server.tool(description="Add two integers.")
def add(a: int, b: int) -> int:
    return a + b


@server.tool(description="Return the text unchanged.")
def echo(text: str) -> str:
    return text


@server.tool(description="Wait this many seconds, then say so.")
def sleep(seconds: float) -> str:
    # Blocking on purpose: a server busy in a tool is what a timeout or a stop must end.
    time.sleep(seconds)
    return f"slept {seconds}"


@server.tool(description="Wait a minute, then say so (a tool that hangs whatever a model asks of it).")
def block() -> str:
    time.sleep(60)
    return "waited a minute"


@server.tool(description="Fail with this message.")
def fail(message: str) -> str:
    # The SDK's ToolError: its message reaches the client (any other exception is reported vaguely).
    raise ToolError(message)


@server.tool(description="The names of the environment variables this server was started with.")
def env_leak() -> str:
    return "\n".join(sorted(os.environ))


def _multiply(a: int, b: int) -> int:
    return a * b


def main(argv: list[str]) -> None:
    extra = os.environ.get("MCP_TEST_EXTRA_TOOL_FILE")
    if extra and Path(extra).exists():
        server.tool(name="multiply", description="Multiply two integers.")(_multiply)
    if argv[:1] == ["stdio"]:
        server.run("stdio")
    elif argv[:1] == ["http"] and len(argv) == 2:
        server.run("streamable-http", host="127.0.0.1", port=int(argv[1]))
    else:
        sys.exit("usage: python -m tests.tools.mcp_server stdio | http PORT")


if __name__ == "__main__":
    main(sys.argv[1:])
