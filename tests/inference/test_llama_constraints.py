"""Constrained decoding on llama.cpp: the bundled model's answers are what the constraint says.

One backend on the bundled SmolLM2-135M GGUF serves the module; every answer is sampled (not
greedy) unless said otherwise, so the grammar, not the model's habit, makes it right.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest

from inference.backends.base import BackendError, Chunk, GenerationParams
from inference.backends.llama_cpp import LlamaCppBackend, LlamaCppOptions
from inference.bundled import bundled_model_path
from inference.constraints import (
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

pytestmark = pytest.mark.slow

# Bounded, so that the grammar itself ends the answer within max_tokens: with an unbounded integer
# or string, a sampled 135M model may write digits or words until the token limit (seen here: a
# population of 160 digits), and a cut answer is no JSON however it was decoded.
CITY = {
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
WEATHER = Tool(
    name="get_weather",
    description="The current weather in a city.",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
TIME = Tool(
    name="get_time",
    description="The current time in a time zone.",
    parameters={"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]},
)
SLUGS = ("chef", "pilot", "gardener")


@pytest.fixture(scope="module")
def llama() -> Iterator[LlamaCppBackend]:
    pytest.importorskip("llama_cpp")
    backend = LlamaCppBackend(model_path=str(bundled_model_path()), options=LlamaCppOptions())
    backend.load()
    yield backend
    backend.close()


def answer(
    llama: LlamaCppBackend, messages: list[dict[str, str]], constraint: Constraint | None, **params: Any
) -> tuple[str, list[Chunk]]:
    chunks = list(llama.stream_chat(messages, GenerationParams(**{"max_tokens": 64, **params}, constraint=constraint)))
    return "".join(c.text for c in chunks), chunks


def test_json_schema_answers_validate(llama: LlamaCppBackend) -> None:
    # Ten times out of ten through /v1 (tests/api/test_openai_structured.py); the backend alone here.
    for seed in range(3):
        text, chunks = answer(llama, CITY_QUESTION, JsonSchema(schema=CITY), temperature=0.7, seed=seed)
        assert chunks[-1].finish_reason == "stop", text
        assert json_schema_check(CITY, json.loads(text)) is None, text


def test_json_object_answers_are_json_objects(llama: LlamaCppBackend) -> None:
    """Any object: nothing bounds its size, so an answer may meet the token limit (a sampled 135M
    model can repeat itself inside a string); one that ends is a JSON object, one cut short is
    reported as cut and is still an object's beginning, never prose."""
    finished = []
    for seed in range(3):
        text, chunks = answer(
            llama, CITY_QUESTION, JsonSchema(schema={"type": "object"}), temperature=0.7, seed=seed, max_tokens=160
        )
        assert text.lstrip().startswith("{"), text
        if chunks[-1].finish_reason == "stop":
            finished.append(json.loads(text))
        else:
            assert chunks[-1].finish_reason == "length", chunks[-1]
    assert finished and all(isinstance(obj, dict) for obj in finished), finished


def test_a_stop_string_does_not_cut_a_constrained_answer_short(llama: LlamaCppBackend) -> None:
    text, _ = answer(llama, CITY_QUESTION, JsonSchema(schema=CITY), temperature=0.7, seed=1, stop=('",',))
    assert json_schema_check(CITY, json.loads(text)) is None, text


def test_integer_bounds_in_a_schema_hold(llama: LlamaCppBackend) -> None:
    schema = {
        "type": "object",
        "properties": {"floor": {"type": "integer", "minimum": 3, "exclusiveMaximum": 12}},
        "required": ["floor"],
    }
    question = [{"role": "user", "content": "Which floor is the office on? Answer as JSON."}]
    for seed in range(3):
        text, _ = answer(llama, question, JsonSchema(schema=schema), temperature=1.0, seed=seed)
        assert json_schema_check(schema, json.loads(text)) is None, text


def test_a_string_pattern_in_a_schema_is_decoded_too(llama: LlamaCppBackend) -> None:
    schema = {
        "type": "object",
        "properties": {"zip": {"type": "string", "pattern": r"^\d{5}$"}, "town": {"enum": ["Lyon", "Nice"]}},
        "required": ["zip", "town"],
    }
    question = [{"role": "user", "content": "Give a French postcode and its town as JSON."}]
    for seed in range(2):
        text, _ = answer(llama, question, JsonSchema(schema=schema), temperature=0.7, seed=seed)
        assert json_schema_check(schema, json.loads(text)) is None, text


@pytest.mark.parametrize(
    ("pattern", "question"),
    [
        (r"\d{3}-\d{4}", "Give me a phone number."),
        ("(yes|no)", "Is Paris in France?"),
        (r"[A-Z][a-z]+( [A-Z][a-z]+)?, [A-Z]{2}", "Name a city and its country code."),
        # Bounded repeats: with [a-z]+ a sampled answer once ran to the token limit in the user part.
        (r"[a-z]{1,12}\.[a-z]{1,12}@[a-z]{1,12}\.(com|org)", "Write an email address."),
    ],
)
def test_regex_answers_match_the_whole_pattern(llama: LlamaCppBackend, pattern: str, question: str) -> None:
    messages = [{"role": "user", "content": question}]
    for seed in range(2):
        text, _ = answer(llama, messages, Regex(pattern=pattern), temperature=0.7, seed=seed)
        assert re.fullmatch(pattern, text), text


def test_choice_answers_exactly_one_option_ten_times_out_of_ten(llama: LlamaCppBackend) -> None:
    question = [
        {"role": "system", "content": f"Name who speaks next: one of {', '.join(SLUGS)}."},
        {"role": "user", "content": "How long should I boil an egg?"},
    ]
    answers = [answer(llama, question, Choice(options=SLUGS), temperature=1.0, seed=seed)[0] for seed in range(10)]
    assert set(answers) <= set(SLUGS), answers


def test_a_schema_the_converter_cannot_compile_is_refused_before_generating(llama: LlamaCppBackend) -> None:
    refused = {"not": {"type": "string"}}
    with pytest.raises(BackendError, match=r"llama\.cpp.*cannot decode under a JSON schema"):
        next(llama.stream_chat(CITY_QUESTION, GenerationParams(constraint=JsonSchema(schema=refused))))


def test_a_pattern_no_grammar_can_express_is_refused(llama: LlamaCppBackend) -> None:
    with pytest.raises(BackendError, match="back-references"):
        next(llama.stream_chat(CITY_QUESTION, GenerationParams(constraint=Regex(pattern=r"(a+)\1"))))


def test_each_grammar_is_compiled_once(llama: LlamaCppBackend, caplog: pytest.LogCaptureFixture) -> None:
    first, second = Choice(options=("up", "down")), Choice(options=("left", "right"))
    with caplog.at_level(logging.DEBUG, logger="inference.backends.llama_cpp"):
        for constraint in (first, second, first, second, first):
            answer(llama, CITY_QUESTION, constraint, max_tokens=4)
    compiled = [r.getMessage() for r in caplog.records if r.getMessage().startswith("compiled")]
    assert len(compiled) == 2, compiled


def test_tool_choice_required_gives_a_call_whose_arguments_validate(llama: LlamaCppBackend) -> None:
    tools = ToolCalls(tools=(WEATHER, TIME), mode="required", parallel=False)
    question = [{"role": "system", "content": tools_prompt(tools)}, {"role": "user", "content": "Weather in Oslo?"}]
    for seed in range(3):
        text, chunks = answer(llama, question, tools, temperature=0.7, seed=seed)
        free, calls = tool_calls_parse(text)
        assert free == "" and len(calls) == 1, text
        tool = {t.name: t for t in tools.tools}[calls[0].name]
        assert json_schema_check(tool.parameters, json.loads(calls[0].arguments)) is None, text
        assert chunks[-1].finish_reason == "stop"


def test_a_named_tool_is_the_one_called(llama: LlamaCppBackend) -> None:
    tools = ToolCalls(tools=(WEATHER, TIME), mode="get_time", parallel=False)
    question = [{"role": "system", "content": tools_prompt(tools)}, {"role": "user", "content": "Weather in Oslo?"}]
    _, calls = tool_calls_parse(answer(llama, question, tools, temperature=0.7, seed=1)[0])
    assert [c.name for c in calls] == ["get_time"]
    assert "zone" in json.loads(calls[0].arguments)


def test_tool_choice_auto_decodes_the_call_under_the_grammar_once_the_model_opens_it(llama: LlamaCppBackend) -> None:
    tools = ToolCalls(tools=(WEATHER,), mode="auto")
    # An earlier turn shows the call format, with an argument the tool does not take.
    slip = '<tool_call>\n{"name": "get_weather", "arguments": {"town": "Oslo"}}\n</tool_call>'
    question = [
        {"role": "system", "content": tools_prompt(tools)},
        {"role": "user", "content": "What is the weather in Oslo?"},
        {"role": "assistant", "content": slip},
        {"role": "tool", "content": '{"sky": "rain"}'},
        {"role": "assistant", "content": "It rains in Oslo."},
        {"role": "user", "content": "What is the weather in Paris?"},
    ]
    # Left alone, the model opens a call and writes no valid one.
    unconstrained, _ = answer(llama, question, None, temperature=0.0)
    assert TOOL_CALL_OPEN in unconstrained
    assert [c.name for c in tool_calls_parse(unconstrained)[1]] != ["get_weather"], unconstrained
    # Under the lazy grammar, the same opening leads to a valid call.
    text, chunks = answer(llama, question, tools, temperature=0.0)
    free, calls = tool_calls_parse(text)
    assert free == "" and [c.name for c in calls] == ["get_weather"], text
    assert json_schema_check(WEATHER.parameters, json.loads(calls[0].arguments)) is None, text
    usage = chunks[-1].usage
    assert chunks[-1].finish_reason == "stop" and usage is not None
    assert usage.completion_tokens >= 20  # the free part and the call


def test_tool_choice_auto_lets_plain_answers_through(llama: LlamaCppBackend) -> None:
    tools = ToolCalls(tools=(WEATHER,), mode="auto")
    question = [{"role": "system", "content": tools_prompt(tools)}, {"role": "user", "content": "Say hello."}]
    text, chunks = answer(llama, question, tools, temperature=0.0, max_tokens=16)
    assert text and TOOL_CALL_OPEN not in text
    assert chunks[-1].finish_reason in ("stop", "length")
