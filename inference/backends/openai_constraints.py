"""A constraint in an OpenAI-style request body, and the server's answer back in our terms.

``openai_compat`` sends OpenAI's own fields (``response_format``, ``tools``), which any such
server may honour. vLLM's server takes those and its structured outputs besides
(``structured_outputs.regex`` / ``.choice``, XGrammar's structural tags), so it decodes every
kind natively. What comes back is made to read like every other backend's stream: a choice's
JSON string unwrapped to the bare option, streamed ``delta.tool_calls`` pieces as whole calls in
the generic format (``inference.constraints.TOOL_CALL_OPEN``) that the worker parses for every
engine alike.

Nothing here imports the ``openai`` package: the tool-call pieces are read by attribute.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from inference.constraints import (
    TOOL_CALL_CLOSE,
    TOOL_CALL_OPEN,
    Choice,
    Constraint,
    JsonSchema,
    Regex,
    ToolCalls,
    openai_tools,
)

# How a server takes a JSON schema. OpenAI's ``json_schema`` type is what OpenAI, vLLM, llama.cpp's
# llama-server, Ollama and LM Studio take; llama-cpp-python's server refuses that type and reads
# a ``schema`` beside ``{"type": "json_object"}`` instead.
SchemaStyle = Literal["openai", "llama-cpp-python"]
# Schemas that say no more than "a JSON object": OpenAI's json_object mode.
_ANY_OBJECT: tuple[dict[str, Any], ...] = ({}, {"type": "object"})


def response_format(schema: dict[str, Any], *, name: str, strict: bool, style: SchemaStyle) -> dict[str, Any]:
    """The ``response_format`` that asks for one JSON value valid against ``schema``."""
    if schema in _ANY_OBJECT:
        return {"type": "json_object"}
    if style == "llama-cpp-python":
        return {"type": "json_object", "schema": schema}
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": strict}}


def choice_schema(options: tuple[str, ...]) -> dict[str, Any]:
    """A JSON string that is one of ``options``: a choice where a server takes only schemas."""
    return {"type": "string", "enum": list(options)}


def tool_fields(constraint: ToolCalls, *, strict: bool = False) -> dict[str, Any]:
    """OpenAI's ``tools``, ``tool_choice`` and ``parallel_tool_calls`` for ``constraint``.

    ``strict`` marks every function ``strict: true``: vLLM holds a call's arguments to the tool's
    schema only then (or under ``--tool-strict-level parameter``); OpenAI's own API accepts it
    only for schemas in its strict subset, so it is not sent there.
    """
    tools = openai_tools(constraint)
    if strict:
        tools = [{"type": "function", "function": {**t["function"], "strict": True}} for t in tools]
    mode = constraint.mode
    choice: Any = mode if mode in ("auto", "required") else {"type": "function", "function": {"name": mode}}
    return {"tools": tools, "tool_choice": choice, "parallel_tool_calls": constraint.parallel}


def openai_fields(constraint: Constraint, *, style: SchemaStyle) -> dict[str, Any]:
    """The body fields that ask an OpenAI-compatible server for ``constraint``.

    The caller has checked the kind: OpenAI's API has no regular expressions.
    """
    if isinstance(constraint, JsonSchema):
        fmt = response_format(constraint.schema, name=constraint.name, strict=constraint.strict, style=style)
        return {"response_format": fmt}
    if isinstance(constraint, Choice):
        schema = choice_schema(constraint.options)
        return {"response_format": response_format(schema, name="choice", strict=True, style=style)}
    if isinstance(constraint, ToolCalls):
        return tool_fields(constraint)
    raise ValueError(f"OpenAI's API cannot ask for {constraint.describe()}")


def vllm_fields(constraint: Constraint, *, native_tools: bool) -> dict[str, Any]:
    """The body fields that have vLLM's server decode under ``constraint``.

    Regex and choice go in vLLM's ``structured_outputs``; a JSON schema in ``response_format``.
    Tool calls: with ``native_tools`` (the server runs a tool-call parser for a model whose chat
    template knows tools) as OpenAI's ``tools``; otherwise in the generic format, the reply held
    to calls by a structural tag (the worker has told the model its tools in the system prompt).
    """
    if isinstance(constraint, Regex):
        return {"structured_outputs": {"regex": constraint.pattern}}
    if isinstance(constraint, Choice):
        return {"structured_outputs": {"choice": list(constraint.options)}}
    if isinstance(constraint, ToolCalls):
        if native_tools:
            return tool_fields(constraint, strict=True)
        return {"response_format": {"type": "structural_tag", "format": tool_call_format(constraint)}}
    return openai_fields(constraint, style="openai")


def tool_call_format(constraint: ToolCalls) -> dict[str, Any]:
    """XGrammar's structural tag for calls in the generic format, one tag per callable tool.

    Each tag's begin fixes the call's opening up to its arguments, so the name is always one of
    the tools and the model only writes the arguments, under the tool's schema. "auto" is lazy:
    free text runs until the model writes ``<tool_call>``, then the call is held to a tag.
    "required" or a named tool: calls only, from the first token. Without ``parallel`` the
    reply ends after the first call.

    Calls follow each other with nothing between: after ``</tool_call>`` a newline is the likely
    token, and a newline separator let the bundled SmolLM2 repeat its call until ``max_tokens``
    (5 replies in 6 at temperature 0.7); with none it ended after its call 6 times in 6.

    The arguments allow one whitespace character between JSON tokens (XGrammar's
    ``max_whitespace_cnt``), as ``json.dumps`` writes them. XGrammar's default allows any run of
    whitespace there, which never has to end: with it one streamed call in ten at temperature 0.7
    ran to ``max_tokens`` without closing; with the bound, 10 in 10 closed.
    """
    tags = [
        {
            "type": "tag",
            "begin": f'{TOOL_CALL_OPEN}\n{{"name": {json.dumps(tool.name)}, "arguments": ',
            "content": {"type": "json_schema", "json_schema": tool.parameters, "max_whitespace_cnt": 1},
            "end": f"}}\n{TOOL_CALL_CLOSE}",
        }
        for tool in constraint.allowed()
    ]
    once = not constraint.parallel
    if constraint.mode == "auto":
        return {"type": "triggered_tags", "triggers": [TOOL_CALL_OPEN], "tags": tags, "stop_after_first": once}
    return {
        "type": "tags_with_separator",
        "tags": tags,
        "separator": "",
        "at_least_one": True,
        "stop_after_first": once,
    }


class NotAString(ValueError):
    """A choice's answer that is no JSON string: the server ignored ``response_format``."""


# The longest run of a JSON string's body that decodes whole: no quote, no escape cut short, and
# no high surrogate without its low one (decoded apart, the two would not make one character).
_STRING_BODY = re.compile(
    r'(?:[^"\\]|\\["\\/bfnrt]|\\u(?![dD][89abAB])[0-9a-fA-F]{4}'
    r"|\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2})*"
)


class StringUnwrap:
    """A JSON string streamed in pieces (a choice decoded under ``choice_schema``) as its bare
    text, piece by piece: quotes dropped, escapes decoded, an escape cut between pieces held
    back until it is whole. Whatever follows the closing quote is dropped."""

    def __init__(self) -> None:
        self._raw = ""
        self._at: int | None = None  # where the undecoded body starts, once the quote opened
        self._closed = False

    def feed(self, piece: str) -> str:
        self._raw += piece
        if self._closed:
            return ""
        if self._at is None:
            body = self._raw.lstrip()
            if not body:
                return ""
            if body[0] != '"':
                raise NotAString(f"the answer starts {body[:40]!r}, not with a JSON string's quote")
            self._at = len(self._raw) - len(body) + 1
        match = _STRING_BODY.match(self._raw, self._at)
        assert match is not None  # the pattern matches the empty string
        end = match.end()
        text: str = json.loads(f'"{self._raw[self._at : end]}"', strict=False)
        self._at = end
        self._closed = self._raw.startswith('"', end)
        return text


class ToolCallJoin:
    """OpenAI's streamed ``delta.tool_calls`` pieces as whole calls in the generic format.

    A call's first piece has its ``index`` and name, later pieces of the same index carry its
    arguments (JSON text) bit by bit (llama-cpp-python's server repeats the name in each). A
    call is written out when the next one starts, and the last one at ``end()``: the worker
    parses whole calls, so nothing is gained by streaming a call's halves.
    """

    def __init__(self) -> None:
        self._index: int | None = None
        self._name = ""
        self._arguments: list[str] = []

    def feed(self, pieces: list[Any]) -> list[str]:
        """The calls these pieces completed (those before a new index)."""
        done = []
        for piece in pieces:
            if piece.index != self._index:
                done += self.end()
                self._index = piece.index
            function = piece.function
            if function is not None:
                self._name = self._name or function.name or ""
                self._arguments.append(function.arguments or "")
        return done

    def end(self) -> list[str]:
        """The call in flight, if any, as text in the generic format."""
        if self._index is None:
            return []
        arguments = "".join(self._arguments).strip() or "{}"
        body = f'{{"name": {json.dumps(self._name)}, "arguments": {arguments}}}'
        call = f"{TOOL_CALL_OPEN}\n{body}\n{TOOL_CALL_CLOSE}"
        self._index, self._name, self._arguments = None, "", []
        return [call]
