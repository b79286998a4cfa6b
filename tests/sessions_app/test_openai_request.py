"""A chat completion request is checked as OpenAI checks it, and refused in OpenAI's terms: the
``code`` and ``param`` its clients show."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User

from agents.models import Agent
from inference import generation
from sessions_app.openai.errors import CompletionError
from sessions_app.openai.request import completion_validate
from tests.fakes import use_backend

HI = [{"role": "user", "content": "Hi"}]


@pytest.fixture
def capped(agent: Agent) -> Agent:
    agent.max_tokens = 512
    agent.max_prompt_chars = 100
    agent.save()
    return agent


def _refusal(user: User, body: Any) -> tuple[int, str, str | None]:
    with pytest.raises(CompletionError) as refused:
        completion_validate(user=user, body=body)
    return refused.value.status, refused.value.code, refused.value.param


@pytest.mark.parametrize(
    ("change", "code", "param"),
    [
        ({"model": 5}, "invalid_model", "model"),
        ({"messages": []}, "invalid_value", "messages"),
        ({"messages": "Hi"}, "invalid_value", "messages"),
        ({"messages": ["Hi"]}, "invalid_type", "messages[0]"),
        ({"messages": [{"role": "function", "content": "Hi"}]}, "invalid_value", "messages[0].role"),
        ({"messages": [{"role": "tool", "content": "Hi"}]}, "invalid_value", "messages[0]"),
        ({"messages": [{"role": "user", "content": None}]}, "invalid_type", "messages[0]"),
        ({"tools": [{"type": "function"}]}, "invalid_value", "tools[0].function"),
        ({"tools": [{"type": "function", "function": {"name": "a b"}}]}, "invalid_value", "tools[0].function.name"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": 5}}}]},
            "invalid_value",
            "tools[0].function.parameters",
        ),
        ({"tool_choice": "required"}, "invalid_value", "tool_choice"),
        ({"tool_choice": "sometimes"}, "invalid_value", "tool_choice"),
        ({"messages": [*HI, {"role": "user", "content": 5}]}, "invalid_type", "messages[1].content"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "invalid_type", "messages[0].content"),
        ({"messages": [{"role": "assistant", "content": "Hi"}]}, "invalid_value", "messages"),
        ({"messages": [{"role": "user", "content": "  "}]}, "invalid_value", "messages"),
        ({"logprobs": True}, "unsupported_parameter", "logprobs"),
        ({"response_format": {"type": "xml"}}, "invalid_value", "response_format"),
        ({"response_format": {"type": "json_schema"}}, "invalid_value", "response_format.json_schema"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "a b", "schema": {}}}},
            "invalid_value",
            "response_format.json_schema.name",
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "thing"}}}},
            "invalid_value",
            "response_format",
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": []}}},
            "invalid_type",
            "response_format.json_schema.schema",
        ),
        ({"n": 2}, "invalid_value", "n"),
        ({"n": True}, "invalid_type", "n"),
        ({"temperature": 3}, "invalid_value", "temperature"),
        ({"temperature": "0.5"}, "invalid_type", "temperature"),
        ({"temperature": float("nan")}, "invalid_type", "temperature"),
        ({"top_p": 1.5}, "invalid_value", "top_p"),
        ({"frequency_penalty": -3}, "invalid_value", "frequency_penalty"),
        ({"max_tokens": 0}, "invalid_value", "max_tokens"),
        ({"max_tokens": 10.0}, "invalid_type", "max_tokens"),
        ({"max_tokens": 513}, "max_tokens_too_large", "max_tokens"),
        ({"max_tokens": 5, "max_completion_tokens": 513}, "max_tokens_too_large", "max_completion_tokens"),
        ({"seed": 2**63}, "invalid_value", "seed"),
        ({"stop": ""}, "invalid_type", "stop"),
        ({"stop": ["a"] * (generation.MAX_STOP_STRINGS + 1)}, "invalid_value", "stop"),
        ({"stream": "yes"}, "invalid_type", "stream"),
        ({"stream_options": {"include_usage": 1}}, "invalid_type", "stream_options.include_usage"),
        ({"messages": [{"role": "user", "content": "x" * 101}]}, "prompt_too_long", "messages"),
    ],
)
def test_a_bad_parameter_is_refused_with_openais_code_and_param(
    user: User, capped: Agent, change: dict[str, Any], code: str, param: str
) -> None:
    assert _refusal(user, {"model": "helper", "messages": HI, **change}) == (400, code, param)


def test_an_unknown_model_is_404_before_anything_else_is_checked(user: User, capped: Agent) -> None:
    assert _refusal(user, {"model": "nope", "messages": []}) == (404, "model_not_found", "model")


def test_a_body_that_is_not_an_object_is_refused(user: User, capped: Agent) -> None:
    assert _refusal(user, [HI]) == (400, "invalid_json", None)


def test_a_refusal_says_what_is_wrong_where(user: User, capped: Agent) -> None:
    with pytest.raises(CompletionError) as refused:
        completion_validate(user=user, body={"model": "helper", "messages": HI, "temperature": 3})
    assert refused.value.message == "temperature: Input should be less than or equal to 2."
    with pytest.raises(CompletionError) as capped_refusal:
        completion_validate(user=user, body={"model": "helper", "messages": HI, "max_tokens": 600})
    assert "at most 512" in capped_refusal.value.message


def test_a_conversation_becomes_history_prompt_and_a_system_prompt(user: User, capped: Agent) -> None:
    body = {
        "model": "helper",
        "messages": [
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": "!"}]},
            {"role": "assistant", "content": "Hi.", "name": "bot"},
            {"role": "user", "content": "Capital of France?"},
        ],
    }
    call = completion_validate(user=user, body=body)
    assert call.history == [{"role": "user", "content": "Hello!"}, {"role": "assistant", "content": "Hi."}]
    assert call.prompt == "Capital of France?" and call.params == {"system_prompt": "Be brief."}


def test_the_settings_a_caller_sets_are_the_only_params(user: User, capped: Agent) -> None:
    body = {
        "model": "helper", "messages": HI, "temperature": 0, "top_p": 0.9, "seed": 7, "stop": "\n",
        "max_tokens": 100, "max_completion_tokens": 20, "repetition_penalty": None, "n": 1,
        "tools": [], "tool_choice": "auto", "logprobs": False, "response_format": {"type": "text"},
        "frequency_penalty": 0.5,
        "user": "someone", "metadata": {"any": "thing"},  # unknown to this server: ignored
    }  # fmt: skip
    call = completion_validate(user=user, body=body)
    assert call.params == {"max_tokens": 20, "temperature": 0.0, "top_p": 0.9, "seed": 7, "stop": ["\n"]}
    assert call.max_tokens == 20


def test_streaming_usage_and_storage_follow_the_flags(user: User, capped: Agent) -> None:
    plain = completion_validate(user=user, body={"model": "helper", "messages": HI, "stream": None})
    assert (plain.stream, plain.include_usage, plain.store) == (False, False, True)
    body = {"stream": True, "stream_options": {"include_usage": True}, "store": False}
    flagged = completion_validate(user=user, body={"model": "helper", "messages": HI, **body})
    assert (flagged.stream, flagged.include_usage, flagged.store) == (True, True, False)


def test_response_format_becomes_the_replys_constraint(user: User, capped: Agent) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    body = {"response_format": {"type": "json_schema", "json_schema": {"name": "place", "schema": schema}}}
    call = completion_validate(user=user, body={"model": "helper", "messages": HI, **body})
    assert call.params["constraint"] == {"kind": "json_schema", "schema": schema, "name": "place", "strict": True}
    plain = completion_validate(
        user=user, body={"model": "helper", "messages": HI, "response_format": {"type": "json_object"}}
    )
    assert plain.params["constraint"]["schema"] == {"type": "object"}


def test_an_invalid_schema_is_refused_saying_why(user: User, capped: Agent) -> None:
    body = {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "thing"}}}}
    with pytest.raises(CompletionError) as refused:
        completion_validate(user=user, body={"model": "helper", "messages": HI, **body})
    assert refused.value.message.startswith("response_format.json_schema.schema: not a valid JSON Schema")
    assert "'thing' is not valid" in refused.value.message


def test_a_backend_that_cannot_constrain_refuses_before_anything_is_queued(
    user: User, capped: Agent, settings: Any
) -> None:
    use_backend(settings, "tests.fakes.FakeBackend")  # decodes under a choice only
    body = {"response_format": {"type": "json_object"}}
    with pytest.raises(CompletionError) as refused:
        completion_validate(user=user, body={"model": "helper", "messages": HI, **body})
    assert (refused.value.status, refused.value.code, refused.value.param) == (
        400, "unsupported_parameter", "response_format"
    )  # fmt: skip
    assert refused.value.message == (
        "The Scripted (tests) backend cannot constrain its output to JSON (it can: choice)."
    )


def test_a_schema_llama_cpp_cannot_compile_is_refused_before_anything_is_stored(user: User, capped: Agent) -> None:
    """``not`` has no grammar: the door says so (400) instead of the worker failing the reply (502)."""
    schema = {"type": "object", "properties": {"a": {"not": {"type": "string"}}}}
    body = {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}}
    with pytest.raises(CompletionError) as refused:
        completion_validate(user=user, body={"model": "helper", "messages": HI, **body})
    assert (refused.value.status, refused.value.param) == (400, "response_format")
    assert refused.value.message.startswith("The llama.cpp backend cannot decode under a JSON schema")
