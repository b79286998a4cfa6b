"""The built-in tools that need nothing of the platform: ``calculator`` and ``current_time``.

Free of Django, as the rest of ``inference.tools``: a worker's tool loop runs them in its own
process. The two built-ins that read the platform (``search_chats``, ``ask_agent``) live in
``sessions_app.tool_builtins``.

- ``calculator`` evaluates arithmetic with simpleeval (never Python's ``eval``), narrowed to
  numbers, ``+ - * / // % **``, parentheses, ``pi``/``e``/``tau`` and a few math functions. A
  power whose result would pass ``MAX_DIGITS`` digits, an expression over ``MAX_EXPRESSION``
  characters, strings, attributes, comparisons and every other name are refused before any work.
  Integers are answered exactly; floats to 15 significant digits (what a double holds), so
  ``0.1+0.2`` answers ``0.3`` and ``sqrt(16)`` answers ``4``.
- ``current_time`` answers the time in an IANA zone (UTC by default) as ISO 8601, with the zone
  and the weekday: ``2026-12-07T09:30:00+01:00 (Europe/Paris, Monday)``.

``run_builtin(name, arguments)`` checks the arguments against the tool's schema and runs it;
every failure is a ``ToolError`` whose message the model reads.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import simpleeval

from inference.constraints import json_schema_check
from inference.tools.base import ToolError, ToolSpec

# The longest expression the calculator reads, and the most digits a power may produce: enough
# for any real sum, far below what would cost a worker time or memory.
MAX_EXPRESSION = 200
MAX_DIGITS = 1000

_FUNCTION_NAMES = "sqrt, log, exp, sin, cos, tan, abs, round, min, max, floor, ceil"
_ALLOWED = f"numbers, + - * / // % **, parentheses, pi, e, tau and the functions {_FUNCTION_NAMES}"

CALCULATOR = ToolSpec(
    name="calculator",
    description=(
        "Computes an arithmetic expression exactly and returns the number. Use it for any sum you "
        f"would otherwise do in your head. Allowed: {_ALLOWED} (log(x) is the natural log, log(x, 10) "
        "base 10; angles are in radians). Example: (1.5 + 2) * sqrt(16) / 3"
    ),
    input_schema={
        "type": "object",
        "properties": {
            "expression": {
                "type": "string",
                # The characters of arithmetic only: an engine's grammar then keeps a small model
                # from writing prose, quotes or markup into the expression.
                "pattern": f"^[0-9a-z_.,+\\-*/%() ]{{1,{MAX_EXPRESSION}}}$",
                "description": "The arithmetic to compute, e.g. 2 + 3 * 4 or round(100 / 7, 2).",
            }
        },
        "required": ["expression"],
        "additionalProperties": False,
    },
)

CURRENT_TIME = ToolSpec(
    name="current_time",
    description=(
        "Returns the current date and time, with the weekday, in a time zone. "
        "Use it whenever the answer depends on today's date or the time now."
    ),
    input_schema={
        "type": "object",
        "properties": {
            "timezone": {
                "type": "string",
                "minLength": 1,
                "maxLength": 64,
                "description": "An IANA time zone such as Europe/Paris or America/New_York. Leave it out for UTC.",
            }
        },
        "additionalProperties": False,
    },
)


# ------------------------------------------------------------------ calculator


class _TooLarge(Exception):
    pass


def _power(base: Any, exponent: Any) -> Any:
    """``base ** exponent``, refused before it is computed when the result would be huge: the
    exponent over simpleeval's MAX_POWER, or an integer result of more than MAX_DIGITS digits.
    A float result that overflows raises OverflowError on its own, quickly."""
    if abs(exponent) > simpleeval.MAX_POWER:
        raise _TooLarge(f"the power {exponent} is too high")
    if abs(base) > 1 and exponent > 0 and exponent * math.log10(abs(base)) > MAX_DIGITS:
        raise _TooLarge(f"the result of this power would have more than {MAX_DIGITS} digits")
    result = base**exponent
    if isinstance(result, complex):  # (-8) ** 0.5
        raise ValueError("a fractional power of a negative number is not a real number")
    return result


def _round(number: Any, ndigits: Any = None) -> Any:
    if ndigits is not None and (not isinstance(ndigits, int) or abs(ndigits) > 100):
        raise ValueError("round's digits must be a whole number between -100 and 100")
    return round(number, ndigits)


_OPERATORS: dict[type[ast.AST], Callable[..., Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: _power,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "sqrt": math.sqrt,
    "log": math.log,
    "exp": math.exp,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "abs": abs,
    "round": _round,
    "min": min,
    "max": max,
    "floor": math.floor,
    "ceil": math.ceil,
}
_NAMES = {"pi": math.pi, "e": math.e, "tau": math.tau}


class _Arithmetic(simpleeval.SimpleEval):
    """simpleeval narrowed to arithmetic: one expression of numbers, names, operators and calls of
    the named functions by name, with positional arguments. Every other node (strings,
    attributes, subscripts, comparisons, lambdas, f-strings) is refused by simpleeval itself."""

    def __init__(self) -> None:
        super().__init__(operators=_OPERATORS, functions=_FUNCTIONS, names=_NAMES)
        self.nodes = {
            ast.Name: self._eval_name,
            ast.UnaryOp: self._eval_unaryop,
            ast.BinOp: self._eval_binop,
            ast.Call: self._eval_call,
            ast.Constant: self._eval_constant,
        }

    @staticmethod
    def parse(expr: str) -> ast.expr:
        return ast.parse(expr.strip(), mode="eval").body  # one expression: no statements, no assignments

    @staticmethod
    def _eval_name(node: ast.Name) -> Any:
        if node.id in _NAMES:
            return _NAMES[node.id]
        if node.id in _FUNCTIONS:
            raise simpleeval.FeatureNotAvailable(f"{node.id} is a function: call it, e.g. {node.id}(2)")
        raise simpleeval.NameNotDefined(node.id, "")

    @staticmethod
    def _eval_constant(node: ast.Constant) -> Any:
        value = node.value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise simpleeval.FeatureNotAvailable(f"{value!r} is not a number")
        return value

    def _eval_call(self, node: ast.Call) -> Any:
        if not isinstance(node.func, ast.Name):
            raise simpleeval.FeatureNotAvailable("only the named functions can be called")
        if node.keywords:
            raise simpleeval.FeatureNotAvailable("pass a function's arguments by position")
        return super()._eval_call(node)


def _format_number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ToolError(f"not arithmetic: the result is not a number ({type(value).__name__})")
    if isinstance(value, int):
        if value.bit_length() > MAX_DIGITS * 3.33:  # past about MAX_DIGITS decimal digits
            raise ToolError(f"too large: the result has more than {MAX_DIGITS} digits")
        return str(value)
    if not math.isfinite(value):
        raise ToolError("too large: the result is not a finite number")
    return format(value, ".15g")


def calculator(arguments: dict[str, Any]) -> str:
    """The value of ``arguments["expression"]``, as text; ToolError saying why it has none."""
    expression = arguments.get("expression")
    if not isinstance(expression, str) or not expression.strip():
        raise ToolError("expression: give the arithmetic to compute as a string, e.g. 2 + 3 * 4")
    if len(expression) > MAX_EXPRESSION:
        raise ToolError(f"too long: the expression has {len(expression)} characters, at most {MAX_EXPRESSION}")
    try:
        value = _Arithmetic().eval(expression)
    except SyntaxError:
        raise ToolError(f"not arithmetic: {expression!r} is not a valid expression. Use {_ALLOWED}.") from None
    except ZeroDivisionError:
        raise ToolError("division by zero") from None
    except (_TooLarge, simpleeval.NumberTooHigh) as exc:
        raise ToolError(f"too large: {exc}") from None
    except OverflowError:
        raise ToolError("too large: the result overflows") from None
    except simpleeval.NameNotDefined as exc:
        raise ToolError(f"not arithmetic: unknown name {exc.name!r}. Use {_ALLOWED}.") from None
    except simpleeval.FunctionNotDefined as exc:
        raise ToolError(f"not arithmetic: unknown function {exc.func_name!r}. Use {_ALLOWED}.") from None
    except simpleeval.OperatorNotDefined:
        raise ToolError(f"not arithmetic: that operator is not allowed. Use {_ALLOWED}.") from None
    except simpleeval.InvalidExpression as exc:
        reason = str(exc).removeprefix("Sorry, ").replace("is not available in this evaluator", "is not allowed")
        raise ToolError(f"not arithmetic: {reason}. Use {_ALLOWED}.") from None
    except (TypeError, ValueError) as exc:  # min(), sqrt(-1), log(0), round(1, 2.5)
        raise ToolError(f"math error: {exc}") from None
    except RecursionError:
        raise ToolError("not arithmetic: the expression is nested too deeply") from None
    return _format_number(value)


# ------------------------------------------------------------------ current_time


def current_time(arguments: dict[str, Any], now: datetime | None = None) -> str:
    """The time ``now`` (this instant when None; a naive ``now`` is taken as UTC) in
    ``arguments["timezone"]`` (UTC when absent), e.g. "2026-12-07T09:30:00+01:00 (Europe/Paris, Monday)"."""
    name = arguments.get("timezone") or "UTC"
    if not isinstance(name, str):
        raise ToolError("timezone: give an IANA time zone name such as 'Europe/Paris', or leave it out for UTC")
    try:
        zone = ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):  # ValueError: a path-like key such as "../x"
        raise ToolError(
            f"unknown time zone {name!r}: give an IANA name such as 'Europe/Paris', 'America/New_York' or 'UTC'"
        ) from None
    moment = now or datetime.now(UTC)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    local = moment.astimezone(zone).replace(microsecond=0)
    return f"{local.isoformat()} ({name}, {local.strftime('%A')})"


# ------------------------------------------------------------------ dispatch

BUILTINS: dict[str, ToolSpec] = {CALCULATOR.name: CALCULATOR, CURRENT_TIME.name: CURRENT_TIME}
_RUNNERS: dict[str, Callable[[dict[str, Any]], str]] = {"calculator": calculator, "current_time": current_time}


def arguments_check(spec: ToolSpec, arguments: Any) -> dict[str, Any]:
    """``arguments`` if they match ``spec``'s input schema; ToolError naming the field otherwise."""
    if not isinstance(arguments, dict):
        raise ToolError(f"{spec.name}: the arguments must be a JSON object")
    problem = json_schema_check(spec.input_schema, arguments)
    if problem is not None:
        raise ToolError(f"{spec.name}: invalid arguments: {problem}")
    return arguments


def run_builtin(name: str, arguments: Any) -> str:
    """Runs the built-in tool ``name`` (one of ``BUILTINS``) on ``arguments``, checked first."""
    spec = BUILTINS.get(name)
    if spec is None:
        raise ToolError(f"no built-in tool {name!r} here; these are: {', '.join(BUILTINS)}")
    return _RUNNERS[name](arguments_check(spec, arguments))
