"""``/v1`` and an agent's own tools: a request that sends no ``tools`` has the agent's tools run on
the platform and gets the final answer, with the calls in ``message.executed_tool_calls`` (streamed:
one ``delta.executed_tool_calls`` chunk per call as it ends); a request that sends ``tools`` gets
its own calls back as ``tool_calls`` and nothing runs on the platform; ``tool_choice: "none"``
turns the agent's tools off.

The first tests drive ``/v1`` in-process (the embedded default: replies in the real thread pool)
on a scripted engine that honours tool calls, with the real built-in ``calculator``; the last one
asks the bundled model on the embedded platform, through the official client.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import AsyncClient
from openai import OpenAI
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from agents.models import Agent
from inference.cache import model_cache
from inference.constraints import ToolCalls
from sessions_app.models import Message
from sessions_app.tokens import token_create
from tests.fakes import use_backend
from tests.integration.chat_client import api
from tests.platform_setup import prepare
from tests.sessions_app.test_tool_loop import ToolBackend, call
from tools.launch import Platform

ASK = [{"role": "user", "content": "What is 6 times 7?"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture
def scripted(settings: Any) -> Iterator[None]:
    use_backend(settings, "tests.sessions_app.test_tool_loop.ToolBackend")
    # In-process, the door's event loop hears the reply's thread at its next database check.
    settings.REPLY_FOLLOW_CHECK_SECONDS = 0.5
    ToolBackend.seen_messages, ToolBackend.seen_params = [], []
    yield
    model_cache().clear()


@pytest.fixture
def calculating(scripted: None, agent: Agent) -> Agent:
    """An agent with the built-in calculator that must call it first."""
    agent.tools = ["calculator"]
    agent.tool_choice = "required"
    agent.save()
    return agent


@pytest.fixture
def secret(user: Any) -> str:
    return token_create(user=user, name="v1")[1]


def completion(secret: str, body: dict[str, Any]) -> tuple[int, str]:
    """POST /v1/chat/completions in-process: the status and the whole body (every SSE event)."""

    async def post() -> tuple[int, str]:
        response = await AsyncClient().post(
            "/v1/chat/completions", body, content_type="application/json", headers={"authorization": f"Bearer {secret}"}
        )
        if not response.streaming:
            return response.status_code, response.content.decode()
        text = ""
        async for piece in response.streaming_content:  # type: ignore[attr-defined]
            text += piece.decode()
        return response.status_code, text

    return asyncio.run(asyncio.wait_for(post(), 30))


def chunks(body: str) -> list[ChatCompletionChunk]:
    """The streamed chunks as the official client reads them (it keeps fields it does not know)."""
    assert body.rstrip().endswith("data: [DONE]"), body[-500:]
    return [
        ChatCompletionChunk.model_validate(json.loads(line[6:]))
        for line in body.splitlines()
        if line.startswith("data: {")
    ]


def reply_of(completion_id: str) -> Message:
    return Message.objects.get(pk=int(completion_id.removeprefix("chatcmpl-")))


def as_stored(stored: dict[str, Any]) -> dict[str, Any]:
    """A stored call (``Message.tool_calls``) as ``executed_tool_calls`` shows it."""
    return {
        "id": stored["id"], "type": "function", "function": {"name": stored["name"], "arguments": stored["arguments"]},
        "status": stored["status"], "result": stored["result"], "error": stored["error"],
        "duration_ms": stored["duration_ms"],
    }  # fmt: skip


# The reply runs on the embedded default's own threads, which read what the test wrote.
DB = pytest.mark.django_db(transaction=True)


@DB
def test_a_whole_completion_runs_the_agents_tools_and_returns_the_answer_with_the_calls(
    calculating: Agent, secret: str
) -> None:
    # The first call fails (no names in arithmetic), the model tries again, then answers.
    ToolBackend.steps = [
        [call("calculator", expression="six*7")],
        [call("calculator", expression="6*7")],
        ["It is 42."],
    ]
    status, body = completion(secret, {"model": calculating.slug, "messages": ASK})
    assert status == 200, body
    answer = ChatCompletion.model_validate_json(body)
    choice = answer.choices[0]
    assert (choice.finish_reason, choice.message.content, choice.message.tool_calls) == ("stop", "It is 42.", None)
    executed = json.loads(body)["choices"][0]["message"]["executed_tool_calls"]
    assert choice.message.model_extra == {"executed_tool_calls": executed}  # the official client keeps it
    failed, worked = executed
    assert failed["function"] == {"name": "calculator", "arguments": '{"expression": "six*7"}'}
    assert (failed["status"], failed["result"]) == ("error", "") and failed["error"]
    assert (worked["status"], worked["result"], worked["error"]) == ("ok", "42", "")
    assert all(c["type"] == "function" and c["id"].startswith("call_") and c["duration_ms"] >= 0 for c in executed)
    # Exactly what the reply stored (every door shows the same calls).
    reply = reply_of(answer.id)
    assert executed == [as_stored(c) for c in reply.tool_calls] and reply.content == "It is 42."
    assert len(ToolBackend.seen_params) == 3


@DB
def test_a_streamed_completion_sends_each_call_as_it_ends_then_the_answer(calculating: Agent, secret: str) -> None:
    calculating.tool_choice = "auto"
    calculating.save()
    ToolBackend.steps = [["Let me compute.", " " + call("calculator", expression="6*7")], ["\n", "It is 42."]]
    status, body = completion(secret, {"model": calculating.slug, "messages": ASK, "stream": True})
    assert status == 200, body
    got = chunks(body)
    deltas = [c.choices[0].delta for c in got]
    extra = [i for i, d in enumerate(deltas) if d.model_extra and "executed_tool_calls" in d.model_extra]
    assert len(extra) == 1  # one chunk per call, sent once
    [piece] = deltas[extra[0]].model_extra["executed_tool_calls"]  # type: ignore[index]
    reply = reply_of(got[0].id)
    assert piece == {"index": 0, **as_stored(reply.tool_calls[0])} and piece["result"] == "42"
    assert deltas[extra[0]].content is None
    # The text before the call went out before it, the answer after it; never the call's markup.
    text = [d.content or "" for d in deltas]
    assert "".join(text[: extra[0]]).startswith("Let me compute.")
    assert "".join(text[extra[0] :]).strip() == "It is 42."
    assert "".join(text) == reply.content and "tool_call" not in reply.content
    assert not any(d.tool_calls for d in deltas)
    assert [c.choices[0].finish_reason for c in got][-1] == "stop"


@DB
def test_a_call_whose_event_was_lost_still_comes_from_the_stored_reply(
    calculating: Agent, secret: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sessions_app.broadcast.tool_send", lambda *args: None)
    ToolBackend.steps = [[call("calculator", expression="2**10")], ["It is 1024."]]
    status, body = completion(secret, {"model": calculating.slug, "messages": ASK, "stream": True})
    assert status == 200, body
    pieces = [
        p for c in chunks(body) for p in (c.choices[0].delta.model_extra or {}).get("executed_tool_calls", [])
    ]  # fmt: skip
    assert [(p["index"], p["function"]["name"], p["result"]) for p in pieces] == [(0, "calculator", "1024")]


@DB
@pytest.mark.parametrize("stream", [False, True])
def test_a_request_with_its_own_tools_gets_its_calls_back_and_nothing_runs_here(
    calculating: Agent, secret: str, stream: bool
) -> None:
    ToolBackend.steps = [[call("get_weather", city="Paris")], ["Never asked."]]
    body = {"model": calculating.slug, "messages": ASK, "tools": [WEATHER], "tool_choice": "required", "stream": stream}
    status, text = completion(secret, body)
    assert status == 200, text
    if stream:
        got = chunks(text)
        calls = [p for c in got for p in c.choices[0].delta.tool_calls or []]
        assert all(not c.choices[0].delta.model_extra for c in got)
        assert [c.choices[0].finish_reason for c in got][-1] == "tool_calls"
        reply_id = got[0].id
    else:
        answer = ChatCompletion.model_validate_json(text)
        calls = answer.choices[0].message.tool_calls or []  # type: ignore[assignment]
        assert answer.choices[0].finish_reason == "tool_calls" and not answer.choices[0].message.model_extra
        reply_id = answer.id
    assert [(c.function.name, c.function.arguments) for c in calls] == [("get_weather", '{"city": "Paris"}')]  # type: ignore[union-attr]
    # One generation, under the client's tools only; the agent's calculator was never offered.
    [params] = ToolBackend.seen_params
    assert isinstance(params.constraint, ToolCalls) and [t.name for t in params.constraint.tools] == ["get_weather"]
    reply = reply_of(reply_id)
    assert reply.tool_calls == [] and reply.params["agent_tools"] is False


@DB
@pytest.mark.parametrize("tools", [None, [WEATHER]])
def test_tool_choice_none_answers_without_the_agents_tools(
    calculating: Agent, secret: str, tools: list[dict[str, Any]] | None
) -> None:
    ToolBackend.steps = [["About forty."], ["Never asked."]]
    body = {"model": calculating.slug, "messages": ASK, "tool_choice": "none", **({"tools": tools} if tools else {})}
    status, text = completion(secret, body)
    assert status == 200, text
    message = json.loads(text)["choices"][0]["message"]
    assert message["content"] == "About forty." and "executed_tool_calls" not in message and "tool_calls" not in message
    [params] = ToolBackend.seen_params
    assert params.constraint is None
    assert all("calculator" not in m["content"] for m in ToolBackend.seen_messages[0])  # not told of it either
    assert reply_of(json.loads(text)["id"]).tool_calls == []


@DB
def test_an_agent_without_tools_answers_as_before(scripted: None, agent: Agent, secret: str) -> None:
    ToolBackend.steps = [["Hello."]]
    status, text = completion(secret, {"model": agent.slug, "messages": ASK})
    assert status == 200, text
    message = json.loads(text)["choices"][0]["message"]
    assert message == {"role": "assistant", "content": "Hello.", "refusal": None}
    assert "agent_tools" not in (reply_of(json.loads(text)["id"]).params or {})


@DB
def test_a_required_tool_choice_without_tools_is_still_refused(calculating: Agent, secret: str) -> None:
    status, text = completion(secret, {"model": calculating.slug, "messages": ASK, "tool_choice": "required"})
    assert status == 400 and json.loads(text)["error"]["param"] == "tool_choice"
    assert not Message.objects.exists() and ToolBackend.seen_params == []


# The bundled model on the embedded platform (tests/api/conftest.py), through the official client.
CALCULATING_AGENT = """
from agents.models import Agent
bundled = Agent.objects.get(slug="assistant")
Agent.objects.update_or_create(slug="assistant-calc", defaults=dict(
    name="Assistant (calculator)", model=bundled.model, backend=bundled.backend,
    system_prompt=bundled.system_prompt, max_tokens=bundled.max_tokens, temperature=0,
    tools=["calculator"], tool_choice="required", max_tool_steps=1))
"""


def stored_reply(platform: Platform, completion_id: str) -> dict[str, Any]:
    """The reply behind a completion as the REST API shows it (its id is ``chatcmpl-<reply id>``)."""
    token = platform.tokens["alice"]
    status, sessions = api(platform.http, token, "GET", "/api/sessions/")
    assert status == 200
    for session in sessions["results"]:
        for message in api(platform.http, token, "GET", f"/api/sessions/{session['id']}/messages/")[1]["results"]:
            if f"chatcmpl-{message['id']}" == completion_id:
                return dict(message)
    raise AssertionError(f"no stored reply for {completion_id}")


@pytest.mark.slow
def test_the_bundled_model_calls_the_calculator_on_the_platform_and_answers(platform: Platform) -> None:
    prepare(platform.env, (), code=CALCULATING_AGENT)
    client = OpenAI(base_url=f"{platform.http}/v1", api_key=platform.tokens["alice"], max_retries=0, timeout=300)
    answer = client.chat.completions.create(
        model="assistant-calc", messages=[{"role": "user", "content": "What is 17 times 23?"}]
    )  # type: ignore[arg-type]
    choice = answer.choices[0]
    executed = (choice.message.model_extra or {}).get("executed_tool_calls")
    # One step (max_tool_steps 1), which had to call; it may hold more than one call.
    assert executed and {c["function"]["name"] for c in executed} == {"calculator"}, choice
    for done in executed:
        assert done["status"] in ("ok", "error") and (done["result"] != "") == (done["status"] == "ok"), done
        json.loads(done["function"]["arguments"])  # decoded under the tool's schema: valid JSON
    reply = stored_reply(platform, answer.id)
    assert executed == [as_stored(c) for c in reply["tool_calls"]]
    assert choice.finish_reason in ("stop", "length") and not choice.message.tool_calls
    assert choice.message.content == reply["content"] and reply["content"].strip()
    assert "<tool_call>" not in reply["content"]
    # Streamed, each call comes in one chunk's delta.executed_tool_calls, which the client keeps.
    stream = client.chat.completions.create(
        model="assistant-calc", messages=[{"role": "user", "content": "What is 2 plus 2?"}], stream=True
    )  # type: ignore[arg-type]
    pieces: list[dict[str, Any]] = []
    text, finish, completion_id = "", None, ""
    for chunk in stream:
        completion_id = chunk.id
        delta = chunk.choices[0].delta
        pieces += (delta.model_extra or {}).get("executed_tool_calls", [])
        text += delta.content or ""
        finish = chunk.choices[0].finish_reason or finish
    reply = stored_reply(platform, completion_id)
    assert pieces and pieces == [{"index": i, **as_stored(c)} for i, c in enumerate(reply["tool_calls"])]
    assert finish in ("stop", "length") and text == reply["content"] and text.strip()
    print(f"\ncalls: {[(c['function']['arguments'], c['status']) for c in executed + pieces]}; "
          f"answers: {choice.message.content!r}, {text!r}")  # fmt: skip
