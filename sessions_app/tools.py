"""An agent's tools on its worker: the tools it has, as the model is told of them, and one call run
within its limits and recorded as the reply stores it.

``Toolbox(agent, user)`` resolves the agent's ``tools`` (built-in names and ``<server>.<tool>``)
into ``ToolSpec``s and runs a call by the name the model used:

- The model sees each tool under a name every engine and OpenAI's API accept
  (``^[a-zA-Z0-9_-]{1,64}$``): a built-in under its own name, a server's tool as
  ``<server>__<tool>`` (a dot is not allowed there). Users and the stored reply see the platform's
  name (``demo.add``).
- ``run`` never raises for the tool's sake: a tool's failure (bad arguments, a server that cannot
  be reached, a timeout, an error the tool reported) comes back as a ``ToolRun`` with status
  ``error`` and its message, which the model reads as the tool's result; a stopped reply's call
  comes back ``cancelled``. The result is cut to ``RESULT_CAP`` characters.
- Every call is logged with its user, agent, tool, status and duration.

``ask_agent`` (``sessions_app.consult``) is offered per reply: its ``agent`` argument names the
agents this reply may consult, and a reply that may consult none (a consultation already at the
deepest, or no other agent for the user) is not offered the tool at all.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

from agents.models import Agent, ToolServer
from agents.tool_servers import tool_server_url_check
from inference.constraints import Tool
from inference.tools.base import ToolCancelled, ToolError, ToolSpec, cap_result
from inference.tools.builtin import BUILTINS, arguments_check, run_builtin
from sessions_app.consult import ask_agent, ask_agent_spec
from sessions_app.tool_builtins import ASK_AGENT, SEARCH_CHATS, search_chats

logger = logging.getLogger(__name__)

_MODEL_NAME = re.compile(r"[^a-zA-Z0-9_-]")
STATUSES = ("running", "ok", "error", "cancelled")


@dataclass
class ToolRun:
    """One call as the reply stores it (``Message.tool_calls``) and every door shows it."""

    id: str
    name: str
    arguments: str
    result: str = ""
    error: str = ""
    status: str = "running"
    duration_ms: int = 0

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    def for_model(self) -> str:
        """What the model reads as the tool's result."""
        return f"Error: {self.error}" if self.status != "ok" else self.result


def model_name(name: str) -> str:
    """The name the model calls a platform tool by: ``demo.add`` -> ``demo__add``."""
    return _MODEL_NAME.sub("_", name.replace(".", "__"))[:64]


def untrusted(result: str) -> str:
    """A tool's result as it goes back into a prompt: it is untrusted text, so it cannot close its
    ``<tool_response>`` block or open a call of its own in the generic format."""
    return result.replace("<tool_", "&lt;tool_").replace("</tool_", "&lt;/tool_")


class Toolbox:
    def __init__(self, agent: Agent, user: Any, reply: Any = None) -> None:
        self.agent = agent
        self.user = user
        self.reply = reply  # the reply the calls are made for (ask_agent's consultations hang on it)
        self.specs: list[ToolSpec] = []
        self._by_model_name: dict[str, ToolSpec] = {}
        builtins = {**BUILTINS, SEARCH_CHATS.name: SEARCH_CHATS}
        wanted = [name for name in agent.tools or [] if isinstance(name, str)]
        server_names = {name.split(".", 1)[0] for name in wanted if "." in name}
        self._servers: dict[str, ToolServer] = {s.name: s for s in ToolServer.objects.filter(name__in=server_names)}
        for name in wanted:
            if name == ASK_AGENT.name:
                spec = ask_agent_spec(agent=agent, user=user, reply=reply)
                if spec is None:
                    logger.info("agent %s: ask_agent left out: no agent it may consult from here", agent.slug)
                    continue
            else:
                spec = builtins.get(name) or self._server_tool(name)
            if spec is None:
                logger.warning("agent %s lists %r, which no tool server offers now: left out", agent.slug, name)
                continue
            called = model_name(spec.name)
            if called in self._by_model_name:
                logger.warning("agent %s: %r and %r share the model name %r: the second is left out",
                               agent.slug, self._by_model_name[called].name, spec.name, called)  # fmt: skip
                continue
            self._by_model_name[called] = spec
            self.specs.append(spec)

    def _server_tool(self, name: str) -> ToolSpec | None:
        server_name, _, tool_name = name.partition(".")
        server = self._servers.get(server_name)
        for tool in (server.tools if server else None) or []:
            if isinstance(tool, dict) and tool.get("name") == tool_name:
                return ToolSpec(name, str(tool.get("description") or ""), tool.get("input_schema") or {})
        return None

    def name_of(self, called: str) -> str:
        """The platform's name of the tool the model called by ``called`` (itself if unknown)."""
        spec = self._by_model_name.get(called)
        return spec.name if spec else called

    def constraint_tools(self) -> tuple[Tool, ...]:
        """The tools for the model's tool-call constraint, under the names it may call."""
        return tuple(Tool(model_name(s.name), s.description, s.input_schema) for s in self.specs)

    def run(self, call_id: str, called: str, arguments: str, cancel: threading.Event | None = None) -> ToolRun:
        spec = self._by_model_name.get(called)
        run = ToolRun(id=call_id, name=spec.name if spec else called, arguments=arguments)
        started = time.monotonic()
        try:
            if spec is None:
                raise ToolError(f"There is no tool {called!r}; the tools are: {', '.join(self._by_model_name)}.")
            try:
                parsed = json.loads(arguments or "{}")
            except json.JSONDecodeError as exc:
                raise ToolError(f"The arguments are not JSON: {exc}") from None
            run.result = cap_result(self._call(spec, parsed, cancel))
            run.status = "ok"
        except ToolCancelled as exc:
            run.status, run.error = "cancelled", str(exc) or "The call was stopped."
        except ToolError as exc:
            run.status, run.error = "error", cap_result(str(exc))
        except Exception as exc:  # a tool's bug is the model's error to read, never the reply's end
            logger.exception("tool %s failed", run.name)
            run.status, run.error = "error", f"The tool failed: {type(exc).__name__}: {exc}"
        run.duration_ms = round((time.monotonic() - started) * 1000)
        logger.info(
            "tool call %s: user=%s agent=%s tool=%s status=%s duration_ms=%d",
            call_id, getattr(self.user, "pk", None), self.agent.slug, run.name, run.status, run.duration_ms,
        )  # fmt: skip
        return run

    def _call(self, spec: ToolSpec, arguments: Any, cancel: threading.Event | None) -> str:
        if spec.name in BUILTINS:
            return run_builtin(spec.name, arguments)
        if spec.name == SEARCH_CHATS.name:
            return search_chats(self.user, arguments)
        if spec.name == ASK_AGENT.name:
            return ask_agent(agent=self.agent, user=self.user, reply=self.reply, arguments=arguments, cancel=cancel)
        from inference.tools.mcp import call  # the MCP SDK takes ~1.3 s to import: only when called

        server_name, _, tool_name = spec.name.partition(".")
        server = self._servers[server_name]
        return call(
            server.spec(), tool_name, arguments_check(spec, arguments),
            timeout=float(server.timeout_seconds), cancel=cancel, url_check=tool_server_url_check,
        )  # fmt: skip
