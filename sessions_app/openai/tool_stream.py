"""An answer in the generic tool-call format (``inference.constraints``), as OpenAI shapes it:
the free text as ``content``, each ``<tool_call>`` block as one of ``tool_calls``.

Streamed, the text goes out as it comes except what might be the start of a call (a tail that
begins ``<tool_call>``, and whitespace before it), and each call goes out whole, as one
``delta.tool_calls`` piece with its ``index``, ``id``, name and arguments, once its closing tag
has arrived: OpenAI's clients and LangChain assemble pieces by index, so one piece per call is
what they expect.

The calls the *platform* ran for the agent (its own tools, when the request sent none) are another
thing: the client has nothing to run, so they come back in the extension field
``executed_tool_calls`` (``executed_call_object``), beside the final answer.
"""

from __future__ import annotations

from typing import Any

from inference.constraints import TOOL_CALL_CLOSE, TOOL_CALL_OPEN, ParsedCall, tool_calls_parse
from inference.reasoning import tag_safe_end


def call_id(reply_id: int, index: int) -> str:
    return f"call_{reply_id}_{index}"


def tool_call_object(reply_id: int, index: int, call: ParsedCall) -> dict[str, Any]:
    return {"id": call_id(reply_id, index), "type": "function",
            "function": {"name": call.name, "arguments": call.arguments}}  # fmt: skip


def executed_call_object(call: dict[str, Any]) -> dict[str, Any]:
    """A call the platform ran (one of the reply's stored ``tool_calls``, ``sessions_app.tools.
    ToolRun``) in the shape of OpenAI's ``tool_calls`` items, so a client reads its name and
    arguments where it knows to, plus how it went: ``status`` (``ok``, ``error``, ``cancelled``),
    ``result`` (empty on an error), ``error`` (empty when ok) and ``duration_ms``."""
    return {
        "id": call["id"], "type": "function", "function": {"name": call["name"], "arguments": call["arguments"]},
        "status": call.get("status", ""), "result": call.get("result", ""), "error": call.get("error", ""),
        "duration_ms": call.get("duration_ms", 0),
    }  # fmt: skip


def message_of(reply_id: int, text: str) -> tuple[dict[str, Any], bool]:
    """The whole answer as OpenAI's assistant message, and whether it holds calls."""
    content, calls = tool_calls_parse(text)
    if not calls:
        return {"role": "assistant", "content": text, "refusal": None}, False
    objects = [tool_call_object(reply_id, i, call) for i, call in enumerate(calls)]
    return {"role": "assistant", "content": content or None, "refusal": None, "tool_calls": objects}, True


class ToolCallStream:
    """Turns text pieces into OpenAI deltas: ``{"content": ...}`` and ``{"tool_calls": [...]}``."""

    def __init__(self, reply_id: int) -> None:
        self.reply_id = reply_id
        self.pending = ""
        self.in_calls = False
        self.calls = 0

    def feed(self, text: str) -> list[dict[str, Any]]:
        self.pending += text
        deltas: list[dict[str, Any]] = []
        if not self.in_calls:
            start = self.pending.find(TOOL_CALL_OPEN)
            if start < 0:
                cut = tag_safe_end(self.pending, TOOL_CALL_OPEN)
                if cut:
                    deltas.append({"content": self.pending[:cut]})
                    self.pending = self.pending[cut:]
                return deltas
            before = self.pending[:start].rstrip()
            if before:
                deltas.append({"content": before})
            self.pending = self.pending[start:]
            self.in_calls = True
        while TOOL_CALL_CLOSE in self.pending:
            block, _, self.pending = self.pending.partition(TOOL_CALL_CLOSE)
            _, calls = tool_calls_parse(block + TOOL_CALL_CLOSE)
            for call in calls:
                piece = {"index": self.calls, **tool_call_object(self.reply_id, self.calls, call)}
                deltas.append({"tool_calls": [piece]})
                self.calls += 1
        return deltas

    def finish(self) -> list[dict[str, Any]]:
        """What is held back once the answer ended: text that was no call after all (an unfinished
        call, cut by max_tokens, is dropped: it has no valid arguments)."""
        if self.in_calls or not self.pending:
            return []
        rest, self.pending = self.pending, ""
        return [{"content": rest}]
