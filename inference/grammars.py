"""GBNF grammars for llama.cpp from the constraints of ``inference.constraints``.

- JSON Schema: llama-cpp-python's own converter (``SchemaConverter``, the one behind
  ``LlamaGrammar.from_json_schema``), with its ``pattern`` visitor replaced by ``regex_gbnf``
  (the stock one needs ``^…$``, knows no ``\\d`` and emits escapes GBNF rejects), an integer's
  bounds honoured (``integer_range_gbnf``; the stock one ignores them) and JSON's ban on raw
  control characters in strings kept. A schema it cannot convert raises ConstraintError: nothing
  falls back to "any JSON". Other keywords it ignores (a number's bounds, ``format`` beyond
  dates and UUIDs, ``uniqueItems``…) are left to ``json_schema_check`` after decoding.
- Regex: ``regex_gbnf``, from the parse tree of Python's own ``re`` parser, so the grammar's
  language is the pattern's as ``re.fullmatch`` reads it. Where a class must be approximated
  (``\\d`` is every Unicode digit) the grammar takes a subset: ASCII digits, letters and spaces.
- Choice: one literal per option.
- Tool calls: the generic format (``constraints.TOOL_CALL_OPEN`` …), each call's object under
  ``tool_call_schema``.

Pure Python; ``llama_cpp`` is imported on first use of the JSON converter.
"""

from __future__ import annotations

import functools
import json
import math

# Python's own pattern parser (``sre_parse`` before 3.11, deprecated under that name): private,
# but its tree is exactly what ``re.fullmatch`` reads, which a second parser would only approximate.
from re import _constants as sre  # type: ignore[attr-defined]
from re import _parser as sre_parse  # type: ignore[attr-defined]
from typing import Any

from inference.constraints import (
    TOOL_CALL_CLOSE,
    TOOL_CALL_OPEN,
    Choice,
    Constraint,
    ConstraintError,
    JsonSchema,
    Regex,
    ToolCalls,
    tool_call_schema,
)

MAX_CODE_POINT = 0x10FFFF
MAX_INTEGER_DIGITS = 16  # what llama-cpp-python's converter allows an integer
_INTEGER_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
# JSON text inside a string literal: no quote, no backslash, no control character unescaped.
_JSON_UNSAFE = ((0x00, 0x1F), (0x22, 0x22), (0x5C, 0x5C))
_ASCII = {
    sre.CATEGORY_DIGIT: ((0x30, 0x39),),
    sre.CATEGORY_SPACE: ((0x09, 0x0D), (0x20, 0x20)),
    sre.CATEGORY_WORD: ((0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)),
}
_NEGATED = {
    sre.CATEGORY_NOT_DIGIT: sre.CATEGORY_DIGIT,
    sre.CATEGORY_NOT_SPACE: sre.CATEGORY_SPACE,
    sre.CATEGORY_NOT_WORD: sre.CATEGORY_WORD,
}
_REFUSED = {
    sre.GROUPREF: "back-references",
    sre.GROUPREF_EXISTS: "conditional groups",
    sre.ASSERT: "look-around",
    sre.ASSERT_NOT: "look-around",
    sre.ATOMIC_GROUP: "atomic groups",
    sre.POSSESSIVE_REPEAT: "possessive repetition",
}

Ranges = tuple[tuple[int, int], ...]


def gbnf_for(constraint: Constraint, *, call_opened: bool = False) -> str:
    """The grammar of ``constraint``; for tool calls, ``call_opened`` gives the rest of the text
    after a ``TOOL_CALL_OPEN`` the model wrote itself (mode "auto"). Raises ConstraintError."""
    if isinstance(constraint, JsonSchema):
        return gbnf_for_json_schema(constraint.schema)
    if isinstance(constraint, Regex):
        return f"root ::= {regex_gbnf(constraint.pattern)}\n"
    if isinstance(constraint, Choice):
        if not constraint.options:
            raise ConstraintError("a choice needs at least one option")
        return "root ::= " + " | ".join(gbnf_literal(o) for o in constraint.options) + "\n"
    return gbnf_for_tool_calls(constraint, call_opened=call_opened)


def gbnf_literal(text: str) -> str:
    """``text`` as a GBNF string literal."""
    return '"' + "".join(_char(ord(c)) for c in text) + '"'


def gbnf_for_json_schema(schema: dict[str, Any]) -> str:
    if schema in ({}, {"type": "object"}):
        from llama_cpp.llama_grammar import JSON_GBNF

        return JSON_GBNF  # root ::= object (OpenAI's json_object)
    converter = _json_converter()
    converter.visit(converter.resolve_refs(schema, "input"), "")
    return _rules(converter)


def gbnf_for_tool_calls(constraint: ToolCalls, *, call_opened: bool) -> str:
    """Calls in the generic format: ``<tool_call>\\n{"name": …, "arguments": …}\\n</tool_call>``,
    one, or several on their own lines when ``parallel``."""
    if not constraint.allowed():
        raise ConstraintError(f"tool_choice names {constraint.mode!r}, which is not one of the tools")
    converter = _json_converter()
    call = converter.visit(converter.resolve_refs(tool_call_schema(constraint), "input"), "call")
    body = f"{gbnf_literal(chr(10))} {call} {gbnf_literal(chr(10) + TOOL_CALL_CLOSE)}"
    first = body if call_opened else f"{gbnf_literal(TOOL_CALL_OPEN)} {body}"
    more = f" ({gbnf_literal(chr(10) + TOOL_CALL_OPEN)} {body})*" if constraint.parallel else ""
    converter._add_rule("root", first + more)
    return _rules(converter)


def _json_converter() -> Any:
    return _converter_class()(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)


def _rules(converter: Any) -> str:
    return str(converter.format_grammar()) + "\n"


@functools.cache
def _converter_class() -> type:
    from llama_cpp.llama_grammar import RESERVED_NAMES, BuiltinRule, SchemaConverter

    _JSON_CHAR = BuiltinRule(r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})', [])

    class Converter(SchemaConverter):
        """llama-cpp-python's converter, its refusals (asserts, ValueErrors) turned into
        ConstraintError, and JSON strings' ``pattern`` decoded by ``regex_gbnf``."""

        def visit(self, schema: Any, name: str) -> str:
            if not isinstance(schema, dict):
                raise ConstraintError(f"llama.cpp's JSON-schema converter cannot compile {schema!r}")
            if schema.get("type") == "integer" and not schema.keys().isdisjoint(_INTEGER_BOUNDS):
                # This version ignores an integer's bounds (later llama.cpp honours them).
                rule_name = name + "-" if name in RESERVED_NAMES else name or "root"
                return str(self._add_rule(rule_name, integer_range_gbnf(*_integer_bounds(schema)) + " space"))
            try:
                return str(super().visit(schema, name))
            except ConstraintError:
                raise
            except (AssertionError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
                raise ConstraintError(f"llama.cpp's JSON-schema converter cannot compile it: {exc}") from None

        def resolve_refs(self, schema: Any, url: str) -> Any:
            try:
                return super().resolve_refs(schema, url)
            except (AssertionError, ValueError, KeyError, TypeError) as exc:
                raise ConstraintError(f"llama.cpp's JSON-schema converter cannot resolve a $ref: {exc}") from None

        def _add_primitive(self, name: str, rule: Any) -> str:
            # This version's string character takes raw control characters, which JSON forbids.
            return str(super()._add_primitive(name, _JSON_CHAR if name == "char" else rule))

        def _visit_pattern(self, pattern: str, name: str) -> str:
            # JSON Schema patterns search: text that matches whole also matches there.
            body = regex_gbnf(pattern, json_string=True)
            return str(self._add_rule(name, f'"\\"" {body} "\\"" space'))

    return Converter


def integer_range_gbnf(low: int | None, high: int | None) -> str:
    """The JSON integers from ``low`` to ``high`` (None: no bound), as the converter writes
    integers: no leading zero, at most ``MAX_INTEGER_DIGITS`` digits."""
    parts = []
    if high is None or high >= 0:
        parts += _naturals(max(low or 0, 0), high)
    if low is None or low < 0:
        # -v for v from -min(high, -1) to -low.
        parts += [
            f'"-" ({part})' for part in _naturals(-min(-1 if high is None else high, -1), None if low is None else -low)
        ]
    if not parts:
        raise ConstraintError(f"no integer lies between {low} and {high}")
    return "(" + " | ".join(f"({part})" for part in parts) + ")"


def _integer_bounds(schema: dict[str, Any]) -> tuple[int | None, int | None]:
    lows, highs = [], []
    if isinstance(schema.get("minimum"), int | float):
        lows.append(math.ceil(schema["minimum"]))
    if isinstance(schema.get("exclusiveMinimum"), int | float):
        lows.append(math.floor(schema["exclusiveMinimum"]) + 1)
    if isinstance(schema.get("maximum"), int | float):
        highs.append(math.floor(schema["maximum"]))
    if isinstance(schema.get("exclusiveMaximum"), int | float):
        highs.append(math.ceil(schema["exclusiveMaximum"]) - 1)
    return (max(lows) if lows else None), (min(highs) if highs else None)


def _naturals(low: int, high: int | None) -> list[str]:
    """Alternatives for the integers from ``low`` >= 0 to ``high``, one per number of digits."""
    top = min(10**MAX_INTEGER_DIGITS - 1, 10**MAX_INTEGER_DIGITS - 1 if high is None else high)
    parts = []
    for digits in range(len(str(low)), len(str(top)) + 1):
        first, last = max(low, 10 ** (digits - 1) if digits > 1 else 0), min(top, 10**digits - 1)
        if first <= last:
            parts.append(_digits_between(str(first), str(last)))
    return parts


def _digits_between(low: str, high: str) -> str:
    """The digit strings of ``low``'s length from ``low`` to ``high``."""
    if low == high:
        return f'"{low}"'
    rest = len(low) - 1
    head = f'"{low[0]}"' if low[0] == high[0] else f"[{low[0]}-{high[0]}]"
    if low[1:] == "0" * rest and high[1:] == "9" * rest:
        return head + (f" [0-9]{{{rest}}}" if rest else "")
    if low[0] == high[0]:
        return f"{head} ({_digits_between(low[1:], high[1:])})"
    parts = [f'"{low[0]}" ({_digits_between(low[1:], "9" * rest)})']
    if int(low[0]) + 1 <= int(high[0]) - 1:
        parts.append(f"[{int(low[0]) + 1}-{int(high[0]) - 1}] [0-9]{{{rest}}}")
    parts.append(f'"{high[0]}" ({_digits_between("0" * rest, high[1:])})')
    return " | ".join(parts)


# ---------------------------------------------------------------------------- regular expressions


def regex_gbnf(pattern: str, *, json_string: bool = False) -> str:
    """A GBNF expression whose language is (a subset of) the strings ``pattern`` fully matches.

    ``json_string``: the text sits inside a JSON string literal, so characters JSON must escape
    are written escaped, and classes leave out quotes, backslashes and control characters.
    Raises ConstraintError for what a grammar cannot express (back-references, look-around,
    case-insensitive matching, anchors inside the pattern).
    """
    try:
        parsed = sre_parse.parse(pattern)
    except Exception as exc:  # re.error, RecursionError, OverflowError
        raise ConstraintError(f"not a valid regular expression: {exc}") from None
    return _Regex(json_string).sequence(list(parsed.data), parsed.state.flags, at_start=True, at_end=True)


class _Regex:
    def __init__(self, json_string: bool) -> None:
        self.json_string = json_string

    def sequence(self, items: list[Any], flags: int, *, at_start: bool, at_end: bool) -> str:
        if flags & sre.SRE_FLAG_IGNORECASE:
            raise ConstraintError("case-insensitive patterns cannot be decoded by a grammar")
        parts: list[str] = []
        literal = ""
        for index, (op, av) in enumerate(items):
            if op is sre.LITERAL:
                literal += chr(av)
                continue
            if literal:
                parts.append(self.literal(literal))
                literal = ""
            # Nothing but anchors before (after) it, in a part that starts (ends) the text.
            leading = at_start and all(o is sre.AT for o, _ in items[:index])
            trailing = at_end and all(o is sre.AT for o, _ in items[index + 1 :])
            if op is sre.AT:
                if (av in (sre.AT_BEGINNING, sre.AT_BEGINNING_STRING) and leading) or (
                    av in (sre.AT_END, sre.AT_END_STRING) and trailing
                ):
                    continue
                raise ConstraintError("anchors and word boundaries inside a pattern cannot be decoded by a grammar")
            parts.append(self.item(op, av, flags, at_start=leading, at_end=trailing))
        if literal:
            parts.append(self.literal(literal))
        return " ".join(parts) if parts else '""'

    def item(self, op: Any, av: Any, flags: int, *, at_start: bool, at_end: bool) -> str:
        if op in _REFUSED:
            raise ConstraintError(f"{_REFUSED[op]} cannot be decoded by a grammar")
        if op is sre.SUBPATTERN:
            _group, add_flags, del_flags, sub = av
            inner = self.sequence(list(sub.data), (flags | add_flags) & ~del_flags, at_start=at_start, at_end=at_end)
            return f"({inner})"
        if op is sre.BRANCH:
            alternatives = [self.sequence(list(sub.data), flags, at_start=at_start, at_end=at_end) for sub in av[1]]
            return "(" + " | ".join(alternatives) + ")"
        if op in (sre.MAX_REPEAT, sre.MIN_REPEAT):
            low, high, sub = av
            inner = self.sequence(list(sub.data), flags, at_start=False, at_end=False)
            return f"({inner}){_repeat(low, high)}"
        return self.char_class(op, av, flags)

    def literal(self, text: str) -> str:
        return gbnf_literal(json.dumps(text, ensure_ascii=False)[1:-1] if self.json_string else text)

    def char_class(self, op: Any, av: Any, flags: int) -> str:
        """One character from a class, ``.``, or a negated literal: the set as code-point ranges."""
        ascii_only = bool(flags & sre.SRE_FLAG_ASCII)
        if op is sre.ANY:
            chars = _complement(()) if flags & sre.SRE_FLAG_DOTALL else _complement(((0x0A, 0x0A),))
        elif op is sre.NOT_LITERAL:
            chars = _complement(((av, av),))
        elif op is sre.IN:
            negated = bool(av) and av[0][0] is sre.NEGATE
            items = av[1:] if negated else av
            # A negated class leaves out a superset of its items, a plain one takes a subset.
            chars = _union(_class_item(o, a, ascii_only, subset=not negated) for o, a in items)
            if negated:
                chars = _complement(chars)
        else:
            raise ConstraintError(f"this part of the pattern ({op}) cannot be decoded by a grammar")
        if self.json_string:
            chars = _minus(chars, _JSON_UNSAFE)
        if not chars:
            raise ConstraintError("a character class in the pattern matches no character a grammar can write")
        return _class_gbnf(chars)


def _repeat(low: int, high: int) -> str:
    if high == sre.MAXREPEAT:
        return {0: "*", 1: "+"}.get(low, f"{{{low},}}")
    if (low, high) == (0, 1):
        return "?"
    return f"{{{low}}}" if low == high else f"{{{low},{high}}}"


def _class_item(op: Any, av: Any, ascii_only: bool, *, subset: bool) -> Ranges:
    if op is sre.LITERAL:
        return ((av, av),)
    if op is sre.RANGE:
        return ((av[0], av[1]),)
    if op is sre.CATEGORY:
        if av in _NEGATED:
            # The complement of a category is exact when the category is, so its own
            # approximation goes the other way.
            return _complement(_category(_NEGATED[av], ascii_only, subset=not subset))
        if av in _ASCII:
            return _category(av, ascii_only, subset=subset)
    raise ConstraintError(f"this class item ({op} {av}) cannot be decoded by a grammar")


def _category(category: Any, ascii_only: bool, *, subset: bool) -> Ranges:
    """``\\d``, ``\\s`` or ``\\w`` as ranges: the ASCII ones when a subset will do (what a
    user means and a cheaper grammar), else every code point Python's ``re`` counts."""
    if ascii_only or subset:
        return tuple(_ASCII[category])
    return _unicode_category(category)


@functools.cache
def _unicode_category(category: Any) -> Ranges:
    test = {
        sre.CATEGORY_DIGIT: str.isdecimal,
        sre.CATEGORY_SPACE: str.isspace,
        sre.CATEGORY_WORD: lambda c: c.isalnum() or c == "_",
    }[category]
    ranges: list[tuple[int, int]] = []
    for point in range(MAX_CODE_POINT + 1):
        if test(chr(point)):
            if ranges and ranges[-1][1] == point - 1:
                ranges[-1] = (ranges[-1][0], point)
            else:
                ranges.append((point, point))
    return tuple(ranges)


def _union(parts: Any) -> Ranges:
    merged: list[tuple[int, int]] = []
    for low, high in sorted(r for part in parts for r in part):
        if merged and low <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    return tuple(merged)


def _complement(ranges: Ranges) -> Ranges:
    out: list[tuple[int, int]] = []
    start = 0
    for low, high in _union([ranges]):
        if low > start:
            out.append((start, low - 1))
        start = high + 1
    if start <= MAX_CODE_POINT:
        out.append((start, MAX_CODE_POINT))
    return tuple(out)


def _minus(ranges: Ranges, removed: Ranges) -> Ranges:
    """``ranges`` without ``removed`` (A - B = not (not A or B))."""
    return _complement(_union([_complement(ranges), removed]))


def _class_gbnf(chars: Ranges) -> str:
    """A character class, written positively or negated, whichever is shorter."""
    excluded = _complement(chars)

    def body(ranges: Ranges) -> str:
        return "".join(_char(lo) if lo == hi else f"{_char(lo)}-{_char(hi)}" for lo, hi in ranges)

    if excluded and len(excluded) < len(chars):
        return f"[^{body(excluded)}]"
    return f"[{body(chars)}]"


def _char(point: int) -> str:
    """One code point as GBNF writes it in a literal or class: printable ASCII as itself, the
    rest as a hex escape (GBNF knows only a few backslash escapes)."""
    if 0x20 <= point < 0x7F and chr(point) not in '\\"[]-^':
        return chr(point)
    if point <= 0xFF:
        return f"\\x{point:02X}"
    if point <= 0xFFFF:
        return f"\\u{point:04X}"
    return f"\\U{point:08X}"
