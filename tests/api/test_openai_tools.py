"""Tool calls through ``/v1``, as the official ``openai`` client and LangChain make them, on the
embedded platform with the bundled SmolLM2 on llama.cpp. Its chat template knows no tools, so
the generic format is used (inference.constraints); the engine decodes the calls under a grammar
of the tools' parameters, so every call's arguments validate, whole and streamed."""

from __future__ import annotations

import json
from typing import Any, Literal

import jsonschema
import openai
import pytest
from langchain_core.messages import AIMessageChunk
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from openai import OpenAI
from pydantic import BaseModel, Field

from tools.launch import Platform

pytestmark = pytest.mark.slow

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "minLength": 1, "maxLength": 40},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The current time in a time zone.",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string", "minLength": 1, "maxLength": 40}},
            "required": ["zone"],
            "additionalProperties": False,
        },
    },
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
PARAMETERS = {t["function"]["name"]: t["function"]["parameters"] for t in (WEATHER, TIME)}
RUNS = 10


def valid_call(name: str, arguments: str) -> dict[str, Any]:
    assert name in PARAMETERS, name
    parsed = json.loads(arguments)
    jsonschema.validate(parsed, PARAMETERS[name])
    return dict(parsed)


@pytest.mark.parametrize("model", ["assistant", "assistant-ov"])  # llama.cpp, OpenVINO GenAI
def test_required_gives_a_valid_call_ten_times_out_of_ten(alice: OpenAI, model: str) -> None:
    for seed in range(RUNS):
        completion = alice.chat.completions.create(
            model=model, messages=ASK, tools=[WEATHER, TIME], tool_choice="required", temperature=0.7,
            seed=seed, max_tokens=120,
        )  # type: ignore[arg-type]  # fmt: skip
        choice = completion.choices[0]
        assert choice.finish_reason == "tool_calls", choice
        calls = choice.message.tool_calls or []
        assert calls and all(c.type == "function" and c.id for c in calls)
        for call in calls:
            valid_call(call.function.name, call.function.arguments)  # type: ignore[union-attr]


def streamed_calls(stream: Any) -> tuple[dict[int, dict[str, str]], str | None]:
    """The calls of a streamed completion, assembled by index as the official client's users do
    (id, name and arguments joined from their pieces), and its finish reason."""
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in stream:
        if not chunk.choices:
            continue
        for piece in chunk.choices[0].delta.tool_calls or []:
            call = calls.setdefault(piece.index, {"id": "", "name": "", "arguments": ""})
            call["id"] += piece.id or ""
            call["name"] += (piece.function.name or "") if piece.function else ""
            call["arguments"] += (piece.function.arguments or "") if piece.function else ""
        finish = chunk.choices[0].finish_reason or finish
    return calls, finish


@pytest.mark.parametrize("model", ["assistant", "assistant-ov"])
def test_streamed_calls_assemble_into_valid_calls_ten_times_out_of_ten(alice: OpenAI, model: str) -> None:
    for seed in range(RUNS):
        stream = alice.chat.completions.create(
            model=model, messages=ASK, tools=[WEATHER, TIME], tool_choice="required", temperature=0.7,
            seed=50 + seed, max_tokens=120, stream=True,
        )  # type: ignore[arg-type]  # fmt: skip
        calls, finish = streamed_calls(stream)
        assert finish == "tool_calls" and calls
        for call in calls.values():
            assert call["id"]
            valid_call(call["name"], call["arguments"])


def test_a_named_tool_choice_calls_that_tool(alice: OpenAI) -> None:
    completion = alice.chat.completions.create(
        model="assistant", messages=ASK, tools=[WEATHER, TIME], temperature=0.7, max_tokens=120,
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )  # type: ignore[arg-type]  # fmt: skip
    calls = completion.choices[0].message.tool_calls or []
    assert calls and {c.function.name for c in calls} == {"get_time"}  # type: ignore[union-attr]
    for call in calls:
        valid_call("get_time", call.function.arguments)  # type: ignore[union-attr]


def test_the_two_step_flow_answers_from_the_tools_result(alice: OpenAI) -> None:
    first = alice.chat.completions.create(
        model="assistant", messages=ASK, tools=[WEATHER], tool_choice="required", temperature=0, max_tokens=120
    )  # type: ignore[arg-type]
    call = (first.choices[0].message.tool_calls or [])[0]
    messages: list[Any] = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 21, "sky": "sunny"})},
    ]
    second = alice.chat.completions.create(
        model="assistant", messages=messages, tools=[WEATHER], tool_choice="none", temperature=0, max_tokens=60
    )  # type: ignore[arg-type]
    choice = second.choices[0]
    assert choice.finish_reason in ("stop", "length") and not choice.message.tool_calls
    assert (choice.message.content or "").strip()
    print(f"\ncall: {call.function.arguments}; answer: {choice.message.content!r}")  # type: ignore[union-attr]


def test_a_tool_message_must_answer_an_earlier_call(alice: OpenAI) -> None:
    messages: list[Any] = [*ASK, {"role": "tool", "tool_call_id": "call_nowhere", "content": "21 C"}]
    with pytest.raises(openai.BadRequestError) as refused:
        alice.chat.completions.create(model="assistant", messages=messages, tools=[WEATHER])  # type: ignore[arg-type]
    assert refused.value.body["param"] == "messages[1].tool_call_id"  # type: ignore[index]


def test_tool_choice_must_name_a_sent_tool(alice: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        alice.chat.completions.create(
            model="assistant", messages=ASK, tools=[WEATHER],
            tool_choice={"type": "function", "function": {"name": "launch"}},
        )  # type: ignore[arg-type]  # fmt: skip
    assert refused.value.body["param"] == "tool_choice"  # type: ignore[index]


class WeatherArgs(BaseModel):
    # Bounded, as a tool's arguments should be: a small model at temperature 0.7 may otherwise
    # write one string until max_tokens (the grammar allows any length), and the call is cut.
    city: str = Field(min_length=1, max_length=40)
    unit: Literal["celsius", "fahrenheit"]


@tool(args_schema=WeatherArgs)
def get_weather(city: str, unit: str) -> str:
    """The current weather in a city."""
    return f"21 degrees {unit} in {city}"


@pytest.mark.parametrize("model_name", ["assistant", "assistant-ov"])
def test_langchain_bind_tools_gets_valid_calls_whole_and_streamed(platform: Platform, model_name: str) -> None:
    model = ChatOpenAI(
        base_url=f"{platform.http}/v1", api_key=platform.tokens["alice"], model=model_name, temperature=0.7,
        max_tokens=120, max_retries=0, timeout=180,
    )  # type: ignore[call-arg]  # fmt: skip
    bound = model.bind_tools([get_weather], tool_choice="required")
    message = bound.invoke("What is the weather in Rome?")
    assert message.tool_calls and message.tool_calls[0]["name"] == "get_weather"  # type: ignore[attr-defined]
    assert set(message.tool_calls[0]["args"]) == {"city", "unit"}  # type: ignore[attr-defined]
    gathered: AIMessageChunk | None = None
    for chunk in bound.stream("What is the weather in Oslo?"):
        gathered = chunk if gathered is None else gathered + chunk  # type: ignore[assignment]
    assert gathered is not None and gathered.tool_calls and gathered.tool_calls[0]["name"] == "get_weather"
    assert isinstance(gathered.tool_calls[0]["args"].get("city"), str)
