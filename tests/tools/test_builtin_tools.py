"""The built-in calculator and clock, as a model calls them: the answer it reads back, or the error
message it reads instead. Pure functions: no database, no model."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from inference.constraints import json_schema_valid
from inference.tools.base import ToolError
from inference.tools.builtin import BUILTINS, CALCULATOR, CURRENT_TIME, calculator, current_time, run_builtin


def calc(expression: str) -> str:
    return calculator({"expression": expression})


def refusal(expression: str) -> str:
    with pytest.raises(ToolError) as caught:
        calc(expression)
    return str(caught.value)


@pytest.mark.parametrize(
    ("expression", "answer"),
    [
        ("2+3*4", "14"),
        ("(1+2)**10", "59049"),
        ("sqrt(16)", "4"),
        ("10/4", "2.5"),
        ("-7 // 2", "-4"),
        ("17 % 5", "2"),
        ("-(3 - 5) * 2", "4"),
        ("round(100 / 7, 2)", "14.29"),
        ("max(3, 9, 4) - min(3, 9, 4)", "6"),
        ("floor(2.7) + ceil(2.1) + abs(-1)", "6"),
        ("log(1000, 10)", "3"),
        ("exp(0) + cos(0) + sin(0) + tan(0)", "2"),
        ("2 * pi / tau + e - e", "1"),
        ("0.1 + 0.2", "0.3"),  # floats to 15 significant digits: no binary noise
        ("2**100", str(2**100)),  # integers exactly
    ],
)
def test_the_calculator_answers_arithmetic(expression: str, answer: str) -> None:
    assert calc(expression) == answer


def test_division_by_zero_is_an_error_that_says_so() -> None:
    assert refusal("1/0") == "division by zero"
    assert refusal("5 % (2 - 2)") == "division by zero"


@pytest.mark.parametrize(
    "expression",
    [
        "__import__('os')",
        "().__class__",
        "(1).__class__.__bases__",
        "'abc' * 3",
        "open('/etc/passwd')",
        "x + 1",
        "[1, 2][0]",
        "1 < 2",
        "lambda: 1",
        "True + 1",
        "1j * 1j",
        "sqrt(x=4)",
    ],
)
def test_anything_but_arithmetic_is_refused_with_what_is_allowed(expression: str) -> None:
    message = refusal(expression)
    assert message.startswith("not arithmetic:")
    assert "sqrt" in message  # the model is told what it may use


def test_a_statement_is_not_arithmetic() -> None:
    assert refusal("a = 1").startswith("not arithmetic:")
    assert refusal("2 +").startswith("not arithmetic:")


@pytest.mark.timeout(5)
@pytest.mark.parametrize("expression", ["9**9**9", "10**1001", "(10**999 * 10**999)**2", "2**4000001"])
def test_a_huge_power_is_refused_before_it_is_computed(expression: str) -> None:
    assert refusal(expression).startswith("too large:")


def test_float_overflow_is_refused() -> None:
    assert refusal("exp(1000)").startswith("too large:")
    assert refusal("1e308 * 10").startswith("too large:")


def test_a_long_expression_is_refused() -> None:
    expression = "+".join(["1"] * 150)  # 299 characters
    assert refusal(expression) == f"too long: the expression has {len(expression)} characters, at most 200"
    assert calc("+".join(["1"] * 100)) == "100"  # 199 characters: fine


def test_a_math_domain_error_is_explained() -> None:
    assert refusal("sqrt(-1)").startswith("math error:")
    assert refusal("(-8) ** 0.5") == "math error: a fractional power of a negative number is not a real number"


def test_the_clock_answers_in_the_zone_asked_with_the_weekday() -> None:
    now = datetime(2026, 12, 7, 8, 30, 15, 123456, tzinfo=UTC)
    assert current_time({"timezone": "Europe/Paris"}, now=now) == "2026-12-07T09:30:15+01:00 (Europe/Paris, Monday)"
    summer = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
    in_summer = current_time({"timezone": "Europe/Paris"}, now=summer)
    assert in_summer == "2026-07-01T14:00:00+02:00 (Europe/Paris, Wednesday)"
    # Behind UTC the local date can be the day before.
    early = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
    assert current_time({"timezone": "America/New_York"}, now=early) == (
        "2026-12-06T22:00:00-05:00 (America/New_York, Sunday)"
    )


def test_the_clock_defaults_to_utc() -> None:
    now = datetime(2026, 12, 7, 8, 30, tzinfo=UTC)
    assert current_time({}, now=now) == "2026-12-07T08:30:00+00:00 (UTC, Monday)"
    assert current_time({"timezone": "UTC"}, now=now) == "2026-12-07T08:30:00+00:00 (UTC, Monday)"


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "../../etc/passwd", "Paris"])
def test_an_unknown_zone_is_an_error_naming_a_real_one(zone: str) -> None:
    with pytest.raises(ToolError) as caught:
        current_time({"timezone": zone})
    assert f"unknown time zone {zone!r}" in str(caught.value)
    assert "Europe/Paris" in str(caught.value)


def test_run_builtin_runs_the_tools_by_name() -> None:
    assert run_builtin("calculator", {"expression": "6*7"}) == "42"
    answer = run_builtin("current_time", {"timezone": "Asia/Tokyo"})
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+09:00 \(Asia/Tokyo, [A-Z][a-z]+day\)", answer)


@pytest.mark.parametrize(
    ("name", "arguments", "named"),
    [
        ("calculator", {"expression": 5}, "expression"),
        ("calculator", {}, "expression"),
        ("calculator", {"expression": "1", "precision": 3}, "precision"),
        ("current_time", {"timezone": 1}, "timezone"),
        ("current_time", {"zone": "UTC"}, "zone"),
    ],
)
def test_run_builtin_checks_the_arguments_and_names_the_field(name: str, arguments: object, named: str) -> None:
    with pytest.raises(ToolError) as caught:
        run_builtin(name, arguments)
    assert "invalid arguments" in str(caught.value)
    assert named in str(caught.value)


def test_run_builtin_refuses_what_is_not_an_object_or_not_a_builtin() -> None:
    with pytest.raises(ToolError, match="must be a JSON object"):
        run_builtin("calculator", "2+2")
    with pytest.raises(ToolError, match="no built-in tool 'shell'"):
        run_builtin("shell", {})


def test_the_specs_are_strict_json_schemas() -> None:
    assert list(BUILTINS) == ["calculator", "current_time"]
    for spec in (CALCULATOR, CURRENT_TIME):
        assert json_schema_valid(spec.input_schema)
        assert spec.input_schema["additionalProperties"] is False
        assert spec.as_json()["name"] == spec.name and len(spec.description) > 40
    assert CALCULATOR.input_schema["required"] == ["expression"]


def test_llama_cpp_accepts_the_grammar_of_each_builtin_tools_call() -> None:
    """Every built-in's schema (the calculator's pattern included) compiles to a grammar llama.cpp
    parses, for a forced call and an opened one: a refused grammar would fail the reply."""
    from llama_cpp import llama_cpp as capi

    from inference.bundled import bundled_model_path
    from inference.constraints import Tool, ToolCalls
    from inference.grammars import gbnf_for
    from inference.llama_runtime import llama_load

    vocab = llama_load(model_path=str(bundled_model_path()), vocab_only=True, verbose=False)
    for spec in BUILTINS.values():
        for opened in (False, True):
            tools = ToolCalls((Tool(spec.name, spec.description, spec.input_schema),), mode="required")
            sampler = capi.llama_sampler_init_grammar(
                vocab._model.vocab, gbnf_for(tools, call_opened=opened).encode(), b"root"
            )
            assert sampler, (spec.name, opened)
            capi.llama_sampler_free(sampler)


def test_the_calculator_refuses_what_is_not_arithmetic_before_evaluating_it() -> None:
    with pytest.raises(ToolError, match="pattern|does not match"):
        run_builtin("calculator", {"expression": '2 + 3"}</tool_call>'})
