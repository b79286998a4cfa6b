"""A reasoning model's reply end to end, on the embedded platform: an ``openai_compat`` agent on an
OpenAI-compatible server that streams what QwQ-32B writes (its chat template opened ``<think>``,
so only ``</think>`` is in the output, here cut across two chunks). The websocket says which part
each delta extends, the stored reply keeps thinking and answer apart, ``/v1`` gives the thinking
as ``reasoning_content`` through the official ``openai`` client (whole and streamed), and the next
turn's prompt, as the server received it, holds no earlier thinking."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from openai import OpenAI

from tests.inference.scripted_server import Script, content, scripted_server
from tests.integration.chat_client import Watcher, api, send, ws_open
from tests.platform_shell import shell_run
from tools.launch import Platform

pytestmark = pytest.mark.slow

CHUNKS = ["Okay", ", the user", " asks 2 and 2.", " That makes 4.\n</", "think>", "\n\n", "The answer", " is 4."]
THINKING, ANSWER = "Okay, the user asks 2 and 2. That makes 4.", "The answer is 4."
THINKING_CHUNKS = 5  # the chunks up to and with the closing tag: one token each on a real server
AGENT = """
from agents.models import Agent
Agent.objects.update_or_create(slug="thinker", defaults=dict(
    name="Thinker", backend="openai_compat", backend_options={"base_url": URL}, reasoning="think_tags"))
"""


@pytest.fixture(scope="module")
def script() -> Script:
    return Script(deltas=[content(chunk) for chunk in CHUNKS])


@pytest.fixture(scope="module")
def platform(v1_platform: Platform, script: Script) -> Iterator[Platform]:
    with scripted_server(script) as url:
        shell_run(v1_platform, f"URL = {url!r}\n" + AGENT)
        yield v1_platform


@pytest.fixture(scope="module")
def alice(platform: Platform) -> OpenAI:
    return OpenAI(base_url=f"{platform.http}/v1", api_key=platform.tokens["alice"], max_retries=0, timeout=120)


def prompt_turns(body: dict[str, Any]) -> str:
    """All the text of the conversation a request to the model server carried."""
    return "\n".join(str(m.get("content")) for m in body["messages"])


def test_a_chat_streams_the_thinking_apart_and_the_next_prompt_leaves_it_out(
    platform: Platform, script: Script
) -> None:
    token = platform.tokens["alice"]
    status, session = api(platform.http, token, "POST", "/api/sessions/", {"agent": "thinker"})
    assert status == 201, session
    watcher = Watcher(ws_open(platform.ws, session["id"], token))
    watcher.recv()
    send(watcher.ws, type="message", content="What is 2 and 2?")
    reply_id = watcher.first_reply_id()
    watcher.until_done(reply_id, timeout=60)
    deltas = [e for e in watcher.events if e["type"] == "delta" and e["message_id"] == reply_id]
    assert "".join(e["text"] for e in deltas if e["part"] == "reasoning") == THINKING
    assert "".join(e["text"] for e in deltas if e["part"] == "content") == ANSWER
    assert [e["part"] for e in deltas][0] == "reasoning" and deltas[-1]["part"] == "content"
    done = watcher.replies[reply_id].done
    assert done is not None and done["status"] == "complete"
    assert (done["message"]["reasoning"], done["message"]["content"]) == (THINKING, ANSWER)

    status, stored = api(platform.http, token, "GET", f"/api/sessions/{session['id']}/messages/{reply_id}/")
    assert status == 200
    assert (stored["reasoning"], stored["content"]) == (THINKING, ANSWER)
    assert stored["reasoning_ms"] is not None and stored["stats"]["reasoning_tokens"] == THINKING_CHUNKS

    send(watcher.ws, type="message", content="And 3 and 3?")
    second = watcher.until(
        lambda e: e["type"] == "message" and e["message"]["role"] == "assistant" and e["message"]["id"] != reply_id
    )["message"]["id"]
    watcher.until_done(second, timeout=60)
    watcher.close()
    sent = prompt_turns(script.bodies[-1])
    assert ANSWER in sent and "And 3 and 3?" in sent
    assert "Okay" not in sent and "think>" not in sent


def test_v1_gives_the_thinking_as_reasoning_content(alice: OpenAI, script: Script) -> None:
    completion = alice.chat.completions.create(
        model="thinker", messages=[{"role": "user", "content": "What is 2 and 2?"}]
    )
    message = completion.choices[0].message
    assert message.content == ANSWER
    assert (message.model_extra or {})["reasoning_content"] == THINKING
    assert completion.usage is not None and completion.usage.completion_tokens_details is not None
    assert completion.usage.completion_tokens_details.reasoning_tokens == THINKING_CHUNKS

    # A client that sends the thinking back (as some do): it stays out of the model's prompt.
    alice.chat.completions.create(
        model="thinker",
        messages=[
            {"role": "user", "content": "What is 2 and 2?"},
            {"role": "assistant", "content": ANSWER, "reasoning_content": THINKING},  # type: ignore[misc]
            {"role": "user", "content": "And 3 and 3?"},
        ],
    )
    sent = prompt_turns(script.bodies[-1])
    assert ANSWER in sent and "Okay" not in sent


def test_v1_streams_the_thinking_as_reasoning_content_deltas(alice: OpenAI) -> None:
    stream = alice.chat.completions.create(
        model="thinker",
        messages=[{"role": "user", "content": "What is 2 and 2?"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    thinking, answer, order = "", "", []
    usage = None
    for chunk in stream:
        usage = chunk.usage or usage
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        piece = (delta.model_extra or {}).get("reasoning_content")
        if piece:
            thinking += piece
            order.append("reasoning")
        if delta.content:
            answer += delta.content
            order.append("content")
    assert (thinking, answer) == (THINKING, ANSWER)
    assert order == sorted(order, key=lambda part: part != "reasoning")  # all the thinking first
    assert usage is not None and usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == THINKING_CHUNKS
