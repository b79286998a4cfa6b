"""Structured output through ``/v1``, as developers ask for it: ``response_format`` with the
official ``openai`` client and LangChain's ``with_structured_output``, on the embedded platform
(daphne, SQLite, the bundled SmolLM2 on llama.cpp). The engine decodes under the schema, so the
answer validates every time, also at a temperature that makes a 135M model ramble."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import openai
import pytest
from langchain_openai import ChatOpenAI
from openai import OpenAI
from pydantic import BaseModel, Field

from tests.integration.chat_client import api
from tools.launch import Platform

pytestmark = pytest.mark.slow

PLACE = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 1, "maxLength": 40},
        "country": {"type": "string", "minLength": 1, "maxLength": 40},
        # Bounded: unbounded, a sampled answer once wrote a 160-digit population until max_tokens.
        "population": {"type": "integer", "minimum": 0, "maximum": 100_000_000},
    },
    "required": ["city", "country", "population"],
    "additionalProperties": False,
}
PLACE_FORMAT = {"type": "json_schema", "json_schema": {"name": "place", "schema": PLACE, "strict": True}}
ASK = [{"role": "user", "content": "Name a big city, its country and its population, as JSON."}]
RUNS = 10
ENGINES = ["assistant", "assistant-ov"]  # llama.cpp, OpenVINO GenAI (tests/api/conftest.py)


@pytest.mark.parametrize("model", ENGINES)
def test_json_schema_answers_validate_ten_times_out_of_ten_at_temperature_0_7(alice: OpenAI, model: str) -> None:
    answers = []
    for seed in range(RUNS):
        completion = alice.chat.completions.create(
            model=model, messages=ASK, response_format=PLACE_FORMAT, temperature=0.7, seed=seed, max_tokens=120
        )  # type: ignore[call-overload]
        choice = completion.choices[0]
        assert choice.finish_reason == "stop", choice
        place = json.loads(choice.message.content or "")
        jsonschema.validate(place, PLACE)
        answers.append(place)
    print(f"\n{RUNS} answers under the schema: {answers[:3]} ...")


@pytest.mark.parametrize("model", ENGINES)
def test_streamed_json_schema_answers_validate_ten_times_out_of_ten(alice: OpenAI, model: str) -> None:
    for seed in range(RUNS):
        stream = alice.chat.completions.create(
            model=model, messages=ASK, response_format=PLACE_FORMAT, temperature=0.7, seed=100 + seed,
            max_tokens=120, stream=True,
        )  # type: ignore[call-overload]  # fmt: skip
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
        jsonschema.validate(json.loads(text), PLACE)


@pytest.mark.parametrize("model", ENGINES)
def test_json_object_answers_are_json_objects(alice: OpenAI, model: str) -> None:
    """Any JSON object: nothing bounds its size, so an answer may meet ``max_tokens`` (greedy, the
    135M model once repeated a phrase inside a string until it did). One that ends is a JSON
    object; one cut short says ``length``, as OpenAI's does, and is an object's beginning."""
    finished = []
    questions = (
        "Give a city's name and country as JSON.",
        "Describe a dog in JSON with its name and breed only.",
        "Give a book's title and author as JSON.",
    )
    for question in questions:
        completion = alice.chat.completions.create(
            model=model, messages=[{"role": "user", "content": question}],
            response_format={"type": "json_object"}, temperature=0, max_tokens=300,
        )  # fmt: skip
        choice = completion.choices[0]
        assert (choice.message.content or "").lstrip().startswith("{"), choice.message.content
        if choice.finish_reason == "stop":
            finished.append(json.loads(choice.message.content or ""))
        else:
            assert choice.finish_reason == "length", choice
    assert finished and all(isinstance(obj, dict) for obj in finished), finished


def test_the_stored_reply_is_the_json_the_caller_got(platform: Platform, alice: OpenAI) -> None:
    completion = alice.chat.completions.create(
        model="assistant", messages=ASK, response_format=PLACE_FORMAT, temperature=0.7, seed=7, max_tokens=120
    )  # type: ignore[call-overload]
    reply_id = int(completion.id.removeprefix("chatcmpl-"))
    status, sessions = api(platform.http, platform.tokens["alice"], "GET", "/api/sessions/")
    assert status == 200
    stored = [
        m
        for s in sessions["results"]
        for m in api(platform.http, platform.tokens["alice"], "GET", f"/api/sessions/{s['id']}/messages/")[1]["results"]
        if m["id"] == reply_id
    ]
    assert [m["content"] for m in stored] == [completion.choices[0].message.content]


def test_an_invalid_schema_is_refused_naming_response_format(alice: OpenAI) -> None:
    bad = {"type": "json_schema", "json_schema": {"name": "place", "schema": {"type": "thing"}}}
    with pytest.raises(openai.BadRequestError) as refused:
        alice.chat.completions.create(model="assistant", messages=ASK, response_format=bad)  # type: ignore[call-overload]
    assert refused.value.body["param"] == "response_format"  # type: ignore[index]
    assert "not a valid JSON Schema" in refused.value.message


class Place(BaseModel):
    city: str = Field(min_length=1, max_length=40)
    country: str = Field(min_length=1, max_length=40)


@pytest.mark.parametrize("model_name", ENGINES)
def test_langchain_with_structured_output_gets_a_valid_object(platform: Platform, model_name: str) -> None:
    model = ChatOpenAI(
        base_url=f"{platform.http}/v1", api_key=platform.tokens["alice"], model=model_name, temperature=0.7,
        max_tokens=120, max_retries=0, timeout=180,
    )  # type: ignore[call-arg]  # fmt: skip
    structured = model.with_structured_output(Place, method="json_schema")
    for question in ("Name a city in France.", "Name a city in Japan.", "Name a city in Peru."):
        place = structured.invoke(question)
        assert isinstance(place, Place) and place.city and place.country


def test_a_schema_keeps_free_text_replies_unchanged(alice: OpenAI) -> None:
    """No response_format: the same agent answers in prose, as before."""
    completion = alice.chat.completions.create(
        model="assistant", messages=[{"role": "user", "content": "What is the capital of France?"}],
        temperature=0, max_tokens=30,
    )  # fmt: skip
    text: Any = completion.choices[0].message.content
    assert "Paris" in text and not text.lstrip().startswith("{")
