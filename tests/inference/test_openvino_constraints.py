"""Constrained decoding on OpenVINO GenAI: the bundled model's IR answers what the constraint says.

Two backends on the same IR serve the module, one per path of the backend: ``kv_cache_reuse`` on
(generate on a ChatHistory) and off (generate on the rendered prompt). Answers are sampled, not
greedy, unless said otherwise, so XGrammar, not the model's habit, makes them right.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from inference.backends.base import ConstraintUnsupported, GenerationParams
from inference.backends.openvino import OpenVINOBackend, OpenVINOOptions
from inference.constraints import (
    TOOL_CALL_CLOSE,
    TOOL_CALL_OPEN,
    Choice,
    Constraint,
    JsonSchema,
    Regex,
    Tool,
    ToolCalls,
    json_schema_check,
    tool_calls_parse,
    tools_prompt,
)
from tests.inference.test_backend_openvino import ir_dir  # noqa: F401 - the session's IR of the bundled model

pytestmark = pytest.mark.slow

pytest.importorskip("openvino_genai")

# Bounded, so that the grammar ends the answer within max_tokens (unbounded, a sampled answer may
# write digits until the token limit).
CITY: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 40},
        "population": {"type": "integer", "minimum": 0, "maximum": 100_000_000},
    },
    "required": ["city", "population"],
}
CITY_QUESTION = [
    {"role": "system", "content": "Answer with one JSON object."},
    {"role": "user", "content": "Give the largest city of France and its population, as city and population."},
]
# maxLength, which XGrammar decodes, keeps the 135M model's occasional runaway string ("N\u0044Nj\u0044Nj...",
# 2 seeds in 10 without it) inside max_tokens; the call would be cut off, not wrong.
WEATHER = Tool(
    name="get_weather",
    description="The current weather in a city.",
    parameters={"type": "object", "properties": {"city": {"type": "string", "maxLength": 16}}, "required": ["city"]},
)
TIME = Tool(
    name="get_time",
    description="The current time in a time zone.",
    parameters={"type": "object", "properties": {"zone": {"type": "string", "maxLength": 16}}, "required": ["zone"]},
)
# A tool taking a city's code: the model, left to itself, writes the city's name.
WEATHER_BY_CODE = Tool(
    name="get_weather",
    description="The current weather in a city, by its code.",
    parameters={
        "type": "object",
        "properties": {"city": {"enum": ["FR-PAR", "GB-LON", "NO-OSL"]}},
        "required": ["city"],
    },
)
# Options a regex alternation would have to escape: a choice is decoded as literal strings.
SPEAKERS = ("chef", "pilot", "sous-chef (pastry)", "END")


@pytest.fixture(scope="module")
def reusing(ir_dir: Path) -> Iterator[OpenVINOBackend]:  # noqa: F811 - the imported fixture
    backend = OpenVINOBackend(model_path=str(ir_dir), options=OpenVINOOptions(kv_cache_reuse=True))
    backend.load()
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def fresh(ir_dir: Path) -> Iterator[OpenVINOBackend]:  # noqa: F811 - the imported fixture
    backend = OpenVINOBackend(model_path=str(ir_dir), options=OpenVINOOptions(kv_cache_reuse=False))
    backend.load()
    yield backend
    backend.close()


def answer(
    backend: OpenVINOBackend, messages: list[dict[str, str]], constraint: Constraint | None, **params: Any
) -> tuple[str, str]:
    """The reply's text and finish reason."""
    params = {"max_tokens": 64, **params}
    chunks = list(backend.stream_chat(messages, GenerationParams(**params, constraint=constraint)))
    return "".join(c.text for c in chunks), str(chunks[-1].finish_reason)


def test_json_schema_answers_validate(reusing: OpenVINOBackend) -> None:
    # Ten times out of ten through /v1 (tests/api/test_openai_structured.py); the backend alone here.
    for seed in range(3):
        text, finish = answer(reusing, CITY_QUESTION, JsonSchema(schema=CITY), temperature=0.7, seed=seed)
        assert finish == "stop", text
        assert json_schema_check(CITY, json.loads(text)) is None, text


def test_an_empty_schema_gives_a_json_object(reusing: OpenVINOBackend) -> None:
    question = [
        CITY_QUESTION[0],
        {"role": "user", "content": "Give the largest city of France as JSON with the key city."},
    ]
    finished = 0
    for seed in range(3):
        text, finish = answer(reusing, question, JsonSchema(schema={}), temperature=0.7, seed=seed, max_tokens=128)
        # Any object is allowed, so a sampled one may ramble on (its keys repeating) until the
        # token limit: seen on an AMD EPYC, not on an Intel Xeon, with the same seeds. The grammar
        # still holds: an object from its first character, and a whole one when the model stops.
        assert text.lstrip().startswith("{"), text
        if finish == "stop":
            assert isinstance(json.loads(text), dict), text
            finished += 1
        else:
            assert finish == "length", (finish, text)
    assert finished >= 1


@pytest.mark.parametrize(
    ("pattern", "question"),
    [
        (r"\d{3}-\d{4}", "Give me a phone number."),
        (r"[A-Z][a-z]+( [A-Z][a-z]+)?, [A-Z]{2}", "Name a city and its country code."),
    ],
)
def test_regex_answers_match_the_whole_pattern(reusing: OpenVINOBackend, pattern: str, question: str) -> None:
    for seed in range(3):
        text, _ = answer(
            reusing, [{"role": "user", "content": question}], Regex(pattern=pattern), temperature=0.7, seed=seed
        )
        assert re.fullmatch(pattern, text), text


def test_choice_answers_exactly_one_option_ten_times_out_of_ten(reusing: OpenVINOBackend) -> None:
    question = [
        {"role": "system", "content": f"Name who speaks next: one of {', '.join(SPEAKERS)}."},
        {"role": "user", "content": "How long should I boil an egg?"},
    ]
    answers = [answer(reusing, question, Choice(options=SPEAKERS), temperature=1.0, seed=seed)[0] for seed in range(10)]
    assert set(answers) <= set(SPEAKERS), answers
    # One option alone is a choice too (the engine's union wants two).
    assert answer(reusing, question, Choice(options=("pilot",)), temperature=1.0)[0] == "pilot"


def test_the_plain_path_applies_every_kind_of_constraint(fresh: OpenVINOBackend) -> None:
    text, _ = answer(fresh, CITY_QUESTION, JsonSchema(schema=CITY), temperature=0.7, seed=1)
    assert json_schema_check(CITY, json.loads(text)) is None, text
    text, _ = answer(fresh, CITY_QUESTION, Regex(pattern=r"\d{3}-\d{4}"), temperature=0.7, seed=1)
    assert re.fullmatch(r"\d{3}-\d{4}", text), text
    text, _ = answer(fresh, CITY_QUESTION, Choice(options=SPEAKERS), temperature=1.0, seed=1)
    assert text in SPEAKERS
    tools = ToolCalls(tools=(WEATHER, TIME), mode="required", parallel=False)
    question = [{"role": "system", "content": tools_prompt(tools)}, {"role": "user", "content": "Weather in Oslo?"}]
    text, _ = answer(fresh, question, tools, temperature=0.7, seed=1)
    assert len(tool_calls_parse(text)[1]) == 1, text


@pytest.mark.parametrize(
    ("constraint", "reason"),
    [
        (JsonSchema(schema={"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}), r"\$defs"),
        (JsonSchema(schema={"type": "string", "pattern": "(?=a)b"}), "Lookahead is not supported"),
        (Regex(pattern="(a)\\1"), "Backreference is not supported"),
    ],
)
def test_a_constraint_xgrammar_refuses_is_a_clear_error_before_any_text(
    reusing: OpenVINOBackend, constraint: Constraint, reason: str
) -> None:
    greedy = GenerationParams(max_tokens=24, temperature=0.0)
    before = "".join(c.text for c in reusing.stream_chat(CITY_QUESTION, greedy))
    chunks = []
    with pytest.raises(ConstraintUnsupported, match=rf"OpenVINO GenAI backend cannot decode under .*{reason}"):
        for chunk in reusing.stream_chat(CITY_QUESTION, GenerationParams(constraint=constraint)):
            chunks.append(chunk)
    assert chunks == []
    # The refusal leaves the pipeline (and its kept conversation) as it was.
    assert "".join(c.text for c in reusing.stream_chat(CITY_QUESTION, greedy)) == before


def test_tool_choice_required_gives_a_call_whose_arguments_validate(reusing: OpenVINOBackend) -> None:
    tools = ToolCalls(tools=(WEATHER, TIME), mode="required", parallel=False)
    question = [{"role": "system", "content": tools_prompt(tools)}, {"role": "user", "content": "Weather in Oslo?"}]
    for seed in range(3):  # ten out of ten through /v1 (tests/api/test_openai_tools.py)
        text, finish = answer(reusing, question, tools, temperature=0.7, seed=seed)
        free, calls = tool_calls_parse(text)
        assert free == "" and len(calls) == 1, text
        tool = {t.name: t for t in tools.tools}[calls[0].name]
        assert json_schema_check(tool.parameters, json.loads(calls[0].arguments)) is None, text
        assert finish == "stop"


def test_parallel_required_calls_are_all_calls(reusing: OpenVINOBackend) -> None:
    tools = ToolCalls(tools=(WEATHER, TIME), mode="required", parallel=True)
    question = [
        {"role": "system", "content": tools_prompt(tools)},
        {"role": "user", "content": "Weather in Oslo and the time in Tokyo?"},
    ]
    text, _ = answer(reusing, question, tools, temperature=0.7, seed=2, max_tokens=96)
    free, calls = tool_calls_parse(text)
    assert text.startswith(TOOL_CALL_OPEN) and free == "" and calls, text
    for call in calls:
        tool = {t.name: t for t in tools.tools}[call.name]
        assert json_schema_check(tool.parameters, json.loads(call.arguments)) is None, text


def test_a_named_tool_is_the_one_called(reusing: OpenVINOBackend) -> None:
    tools = ToolCalls(tools=(WEATHER, TIME), mode="get_time", parallel=False)
    question = [{"role": "system", "content": tools_prompt(tools)}, {"role": "user", "content": "Weather in Oslo?"}]
    _, calls = tool_calls_parse(answer(reusing, question, tools, temperature=0.7, seed=1)[0])
    assert [c.name for c in calls] == ["get_time"]
    assert "zone" in json.loads(calls[0].arguments)


def auto_question(tools: ToolCalls, question: str) -> list[dict[str, str]]:
    """A conversation whose earlier turn shows the model a call after a few words of its own."""
    call = json.dumps({"name": "get_weather", "arguments": {"city": "London"}})
    shown = f"Let me look that up.\n{TOOL_CALL_OPEN}\n{call}\n{TOOL_CALL_CLOSE}"
    return [
        {"role": "system", "content": tools_prompt(tools)},
        {"role": "user", "content": "Weather in London?"},
        {"role": "assistant", "content": shown},
        {"role": "user", "content": question},
    ]


def test_tool_choice_auto_lets_free_text_run_then_makes_the_call_valid(reusing: OpenVINOBackend) -> None:
    tools = ToolCalls(tools=(WEATHER_BY_CODE,), mode="auto")
    question = auto_question(tools, "Weather in Paris?")
    unconstrained_invalid = 0
    for seed in range(4):
        text, finish = answer(reusing, question, tools, temperature=0.7, seed=seed)
        free, calls = tool_calls_parse(text)
        assert free and len(calls) == 1 and finish == "stop", text
        assert json_schema_check(WEATHER_BY_CODE.parameters, json.loads(calls[0].arguments)) is None, text
        _, calls = tool_calls_parse(answer(reusing, question, None, temperature=0.7, seed=seed)[0])
        unconstrained_invalid += (
            not calls or json_schema_check(WEATHER_BY_CODE.parameters, json.loads(calls[0].arguments)) is not None
        )
    # The same model and seeds without the grammar: calls of a name, not a code, or no call at all.
    assert unconstrained_invalid >= 2


def test_tool_choice_auto_leaves_a_plain_answer_as_it_was(fresh: OpenVINOBackend) -> None:
    tools = ToolCalls(tools=(WEATHER_BY_CODE,), mode="auto")
    question = auto_question(tools, "Say hello.")
    for seed in (0, 1):
        text, finish = answer(fresh, question, tools, temperature=0.7, seed=seed)
        assert text and TOOL_CALL_OPEN not in text and finish == "stop", text
        assert text == answer(fresh, question, None, temperature=0.7, seed=seed)[0]
