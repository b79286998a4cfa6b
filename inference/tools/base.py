"""What an agent's tools are, wherever they run: the platform's built-in tools or an MCP server's.

Free of Django, as the backends are: a worker's tool loop, the MCP client and the built-in tools
share these shapes.

- ``ToolSpec``: a tool as the model is told of it (name, description, JSON schema of its input).
  An MCP server's tool is named ``<server>.<tool>`` on the platform; a built-in by its bare name.
- ``ToolError``: a call that failed; its message goes back to the model as the tool's result,
  marked as an error. ``ToolCancelled``: a call stopped because its reply was stopped.
- ``cap_result``: a result cut to ``RESULT_CAP`` characters, saying it was cut.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

# The platform's own tools (inference.tools.builtin, sessions_app for the two that read chats
# and agents). An agent lists them by these names beside "<server>.<tool>".
BUILTIN_NAMES = ("calculator", "current_time", "search_chats", "ask_agent")
# The most characters of one tool result that reach the model and the stored reply.
RESULT_CAP = 8000
# A call's timeout when its server names none, in seconds.
DEFAULT_TIMEOUT = 30.0


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    input_schema: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "input_schema": self.input_schema}


class ToolError(Exception):
    """A tool call that failed: the message says why, for the model and the user."""


class ToolCancelled(ToolError):
    """A tool call ended because its reply was stopped."""


def cap_result(text: str, cap: int = RESULT_CAP) -> str:
    if len(text) <= cap:
        return text
    return text[:cap] + f"\n[… cut: the result had {len(text)} characters, the first {cap} are shown]"


@dataclass(frozen=True)
class ServerSpec:
    """How to reach one MCP server (``inference.tools.mcp``; ``agents.models.ToolServer.spec()``).

    Here rather than in ``mcp`` so that a model can build one without importing the MCP SDK.
    ``env`` and ``headers`` may hold secrets: kept out of ``repr``."""

    name: str
    transport: Literal["stdio", "http"] = "stdio"
    command: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict, repr=False)
    url: str = ""
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    timeout: float = DEFAULT_TIMEOUT
