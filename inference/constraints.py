"""What a reply's text must be: one constraint, honoured by each engine's own constrained decoding.

A constraint travels in ``GenerationParams.constraint`` to the backend, which turns it into its
engine's native form before the first token (llama.cpp: a GBNF grammar; OpenVINO GenAI: a
``StructuredOutputConfig``; vLLM and OpenAI-compatible servers: the request's structured-output
fields). Nothing is retried and nothing is hoped for: the engine cannot sample a token that
leaves the language. A backend that cannot honour a kind lists it not in ``Backend.constraints``
and ``Backend.constraint_check`` refuses it, naming the backend, before anything is generated.

The kinds:

- ``JsonSchema``: one JSON value valid against ``schema`` (``{}`` or ``{"type": "object"}`` for
  OpenAI's ``json_object``). Engines compile the schema to a grammar; the keywords they support
  differ a little (``format`` and a few others are checked after, by ``json_schema_check``).
- ``Regex``: text matching ``pattern`` as a whole (the Python ``re`` dialect's common subset:
  classes, groups, alternation, repetition; no look-around, no back-references).
- ``Choice``: exactly one of ``options`` (a supervisor's pick of the next speaker).
- ``ToolCalls``: one or more calls of the given tools in the generic tool-call format
  (``tool_call_format``); ``mode`` "auto" lets free text run until a call starts, "required" makes
  the reply calls only, a tool's name forces that tool.

This module is free of Django: job steps in child processes use it as the workers do.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

# The generic tool-call format (Hermes / Qwen style), used for models whose chat template knows no
# tools (the bundled SmolLM2): each call is one JSON object between these tags.
TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
# A tool's result goes back to the model as a user turn of these blocks.
TOOL_RESPONSE_OPEN = "<tool_response>"
TOOL_RESPONSE_CLOSE = "</tool_response>"


class ConstraintError(ValueError):
    """A constraint that is not well formed (a schema that is no JSON Schema, a bad pattern)."""


@dataclass(frozen=True)
class JsonSchema:
    kind: ClassVar[str] = "json_schema"
    schema: dict[str, Any] = field(default_factory=dict)
    name: str = "response"
    strict: bool = True

    def describe(self) -> str:
        return "a JSON schema" if self.schema not in ({}, {"type": "object"}) else "JSON"


@dataclass(frozen=True)
class Regex:
    kind: ClassVar[str] = "regex"
    pattern: str = ""

    def describe(self) -> str:
        return "a regular expression"


@dataclass(frozen=True)
class Choice:
    kind: ClassVar[str] = "choice"
    options: tuple[str, ...] = ()

    def describe(self) -> str:
        return "a choice among strings"


@dataclass(frozen=True)
class Tool:
    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})


@dataclass(frozen=True)
class ToolCalls:
    kind: ClassVar[str] = "tools"
    tools: tuple[Tool, ...] = ()
    mode: str = "auto"  # "auto", "required", or the name of the one tool to call
    parallel: bool = True

    def describe(self) -> str:
        return "tool calls"

    def allowed(self) -> tuple[Tool, ...]:
        """The tools a call may name: all of them, or the one that ``mode`` forces."""
        if self.mode in ("auto", "required"):
            return self.tools
        return tuple(t for t in self.tools if t.name == self.mode)


Constraint = JsonSchema | Regex | Choice | ToolCalls
KINDS: tuple[str, ...] = ("json_schema", "regex", "choice", "tools")
Kind = Literal["json_schema", "regex", "choice", "tools"]


# ------------------------------------------------------------------ checks and (de)serialisation


def json_schema_valid(schema: Any) -> dict[str, Any]:
    """``schema`` if it is a JSON Schema (draft 2020-12's meta-schema); raises ConstraintError."""
    import jsonschema

    if not isinstance(schema, dict):
        raise ConstraintError("the schema must be a JSON object")
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path)
        raise ConstraintError(f"not a valid JSON Schema{f' at {where}' if where else ''}: {exc.message}") from None
    return schema


def json_schema_check(schema: dict[str, Any], value: Any) -> str | None:
    """Why ``value`` does not validate against ``schema`` (None when it does)."""
    import jsonschema

    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(value))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path)
    return f"{where or 'the value'}: {error.message}"


def regex_valid(pattern: Any) -> str:
    if not isinstance(pattern, str) or not pattern:
        raise ConstraintError("the pattern must be a non-empty string")
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ConstraintError(f"not a valid regular expression: {exc}") from None
    if re.search(r"\(\?[=!<]|\\[1-9]", pattern):
        raise ConstraintError("look-around and back-references cannot be decoded by a grammar")
    return pattern


def constraint_to_json(constraint: Constraint) -> dict[str, Any]:
    """A JSON-able form, stored with a reply's parameters (``Message.params["constraint"]``)."""
    if isinstance(constraint, JsonSchema):
        return {
            "kind": "json_schema",
            "schema": constraint.schema,
            "name": constraint.name,
            "strict": constraint.strict,
        }
    if isinstance(constraint, Regex):
        return {"kind": "regex", "pattern": constraint.pattern}
    if isinstance(constraint, Choice):
        return {"kind": "choice", "options": list(constraint.options)}
    return {
        "kind": "tools",
        "tools": [{"name": t.name, "description": t.description, "parameters": t.parameters} for t in constraint.tools],
        "mode": constraint.mode,
        "parallel": constraint.parallel,
    }


def constraint_from_json(data: Any) -> Constraint:
    """The constraint ``constraint_to_json`` wrote; raises ConstraintError on anything else."""
    if not isinstance(data, dict):
        raise ConstraintError("a constraint is a JSON object with a kind")
    kind = data.get("kind")
    if kind == "json_schema":
        return JsonSchema(
            schema=json_schema_valid(data.get("schema", {})),
            name=str(data.get("name") or "response"),
            strict=bool(data.get("strict", True)),
        )
    if kind == "regex":
        return Regex(pattern=regex_valid(data.get("pattern")))
    if kind == "choice":
        options = data.get("options")
        if not isinstance(options, list) or not options or not all(isinstance(o, str) and o for o in options):
            raise ConstraintError("a choice needs a non-empty list of non-empty strings")
        return Choice(options=tuple(dict.fromkeys(options)))
    if kind == "tools":
        tools = data.get("tools")
        if not isinstance(tools, list) or not tools:
            raise ConstraintError("tool calls need at least one tool")
        made = []
        for tool in tools:
            if not isinstance(tool, dict) or not isinstance(tool.get("name"), str) or not tool["name"]:
                raise ConstraintError("each tool needs a name")
            parameters = tool.get("parameters") or {"type": "object", "properties": {}}
            made.append(Tool(tool["name"], str(tool.get("description") or ""), json_schema_valid(parameters)))
        mode = data.get("mode", "auto")
        if mode not in ("auto", "required") and mode not in {t.name for t in made}:
            raise ConstraintError(f"tool_choice names {mode!r}, which is not one of the tools")
        return ToolCalls(tools=tuple(made), mode=str(mode), parallel=bool(data.get("parallel", True)))
    raise ConstraintError(f"unknown constraint kind {kind!r} (one of {', '.join(KINDS)})")


# ------------------------------------------------------------------ what engines compile


def regex_for_choice(options: tuple[str, ...]) -> str:
    """A pattern matching exactly one of ``options`` (for engines that take a regex, not a list)."""
    return "(" + "|".join(re.escape(o) for o in options) + ")"


def tool_call_schema(constraint: ToolCalls) -> dict[str, Any]:
    """The JSON Schema of one call's object in the generic format: ``{"name", "arguments"}``, the
    arguments valid against the named tool's ``parameters``."""
    variants = [
        {
            "type": "object",
            "properties": {"name": {"const": tool.name}, "arguments": tool.parameters},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for tool in constraint.allowed()
    ]
    return variants[0] if len(variants) == 1 else {"anyOf": variants}


def tools_prompt(constraint: ToolCalls) -> str:
    """The generic tool section of a system prompt, for chat templates that know no tools: the
    tools as JSON and how to call them (the format ``tool_calls_parse`` reads)."""
    listed = "\n".join(
        json.dumps({"type": "function", "function": {"name": t.name, "description": t.description,
                                                       "parameters": t.parameters}}, ensure_ascii=False)
        for t in constraint.tools
    )  # fmt: skip
    return (
        "You may call functions to help answer. The functions, as JSON:\n"
        f"<tools>\n{listed}\n</tools>\n"
        f"To call one, answer with a JSON object of its name and arguments between {TOOL_CALL_OPEN} and "
        f"{TOOL_CALL_CLOSE} tags:\n{TOOL_CALL_OPEN}\n"
        '{"name": "<function name>", "arguments": {<its arguments>}}\n'
        f"{TOOL_CALL_CLOSE}\n"
        f"Each result comes back between {TOOL_RESPONSE_OPEN} and {TOOL_RESPONSE_CLOSE} tags. "
        "Call a function only when it helps; otherwise answer directly."
    )


def tool_calls_render(text: str, calls: list[tuple[str, str]]) -> str:
    """An assistant turn with calls, ``(name, arguments as JSON text)``, in the generic format."""
    blocks = []
    for name, arguments in calls:
        try:
            parsed = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as exc:
            raise ConstraintError(f"the arguments of {name!r} are not JSON ({exc.msg})") from None
        call = json.dumps({"name": name, "arguments": parsed}, ensure_ascii=False)
        blocks.append(f"{TOOL_CALL_OPEN}\n{call}\n{TOOL_CALL_CLOSE}")
    return "\n".join([text.strip(), *blocks] if text.strip() else blocks)


def tool_response_render(result: str) -> str:
    """One tool result, as the model reads it back in the generic format."""
    return f"{TOOL_RESPONSE_OPEN}\n{result}\n{TOOL_RESPONSE_CLOSE}"


@dataclass(frozen=True)
class ParsedCall:
    name: str
    arguments: str  # JSON text, as OpenAI sends function.arguments


def tool_calls_parse(text: str) -> tuple[str, list[ParsedCall]]:
    """Split a reply in the generic format into its free text (before the first call) and its calls."""
    start = text.find(TOOL_CALL_OPEN)
    if start < 0:
        return text, []
    calls: list[ParsedCall] = []
    opened = start
    while opened >= 0:
        body_start = opened + len(TOOL_CALL_OPEN)
        # A closing tag inside an argument's string does not end the call: the call ends at the
        # first closing tag before which the body is JSON.
        first = close = text.find(TOOL_CALL_CLOSE, body_start)
        call = None
        while close >= 0:
            try:
                call = json.loads(text[body_start:close])
                break
            except json.JSONDecodeError:
                close = text.find(TOOL_CALL_CLOSE, close + 1)
        if close < 0:  # no JSON call here: skip the block
            if first < 0:
                break
            close = first
        if isinstance(call, dict) and isinstance(call.get("name"), str):
            arguments = call.get("arguments", {})
            calls.append(ParsedCall(call["name"], json.dumps(arguments, ensure_ascii=False)))
        opened = text.find(TOOL_CALL_OPEN, close + len(TOOL_CALL_CLOSE))
    return text[:start].rstrip(), calls


# ------------------------------------------------------------------ a model's own tool template


def template_knows_tools(chat_template: str) -> bool:
    """Whether a chat template renders the ``tools`` it is given (Qwen2.5's, Llama 3.1's, Hermes'
    do; SmolLM2's does not): such a model is told its tools by its own template."""
    return re.search(r"\btools\b", chat_template) is not None


def structured_messages(messages: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Turns in the generic format as a chat template with tools reads them (Hugging Face's and
    OpenAI's shape): an assistant's ``<tool_call>`` blocks as ``tool_calls`` (arguments as objects),
    a user turn of ``<tool_response>`` blocks as one ``tool`` message per block."""
    out: list[dict[str, Any]] = []
    responses = re.compile(re.escape(TOOL_RESPONSE_OPEN) + r"\n?(.*?)\n?" + re.escape(TOOL_RESPONSE_CLOSE), re.S)
    for message in messages:
        role, content = message["role"], message["content"]
        if role == "assistant" and TOOL_CALL_OPEN in content:
            text, calls = tool_calls_parse(content)
            out.append({
                "role": "assistant", "content": text,
                "tool_calls": [{"id": f"call_{len(out)}_{i}", "type": "function",
                                "function": {"name": c.name, "arguments": json.loads(c.arguments)}}
                               for i, c in enumerate(calls)],
            })  # fmt: skip
        elif role == "user" and content.startswith(TOOL_RESPONSE_OPEN) and responses.sub("", content).strip() == "":
            out.extend({"role": "tool", "content": body} for body in responses.findall(content))
        else:
            out.append(dict(message))
    return out


def openai_tools(constraint: ToolCalls) -> list[dict[str, Any]]:
    """The tools in OpenAI's (and chat templates') shape."""
    return [
        {"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}
        for t in constraint.tools
    ]
