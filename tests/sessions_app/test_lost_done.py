"""A lost ``done`` ends every door within seconds, with the stored final state.

Redis pub/sub keeps no event for a reader that is away, and Redis may restart: here the worker's
``done`` event is dropped where it leaves for the channel layer, and each door (websocket, SSE,
``/v1`` streamed and whole, the terminal chat) must still end the reply from what the database
kept. The replies run in the embedded default's real thread pool on a scripted backend.
"""

from __future__ import annotations

import asyncio
import io
import json
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from django.test import AsyncClient

from agents.models import Agent
from inference.cache import model_cache
from sessions_app import services
from sessions_app.models import Message, Session
from sessions_app.tokens import token_create
from tests.fakes import FakeBackend, use_backend

pytestmark = pytest.mark.django_db(transaction=True)

WITHIN = 6.0  # seconds; REPLY_FOLLOW_CHECK_SECONDS is 0.5 here


@pytest.fixture(autouse=True)
def done_events_are_lost(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    use_backend(settings, "tests.fakes.FakeBackend")
    settings.REPLY_FOLLOW_CHECK_SECONDS = 0.5
    FakeBackend.script = ["Hello", ", ", "world", "."]
    FakeBackend.delay = 0.0
    FakeBackend.first_delay = 0.3  # the door is listening before the reply ends
    FakeBackend.on_chunk = None
    dropped: list[int] = []
    monkeypatch.setattr("sessions_app.broadcast.done_send", lambda session_id, message: dropped.append(message["id"]))
    yield dropped
    FakeBackend.first_delay = 0.0
    model_cache().clear()


@pytest.fixture
def session(user: Any, agent: Agent) -> Session:
    return services.session_create(owner=user, agent=agent)


@pytest.fixture
def secret(user: Any) -> str:
    return token_create(user=user, name="doors")[1]


def stored(reply_id: int) -> Message:
    return Message.objects.get(pk=reply_id)


def test_the_websocket_gets_done_from_the_stored_state(
    session: Session, secret: str, done_events_are_lost: Any
) -> None:
    from chatsite.asgi import application

    async def chat() -> tuple[list[dict[str, Any]], float]:
        ws = WebsocketCommunicator(
            application, f"/ws/sessions/{session.pk}/", headers=[(b"authorization", f"Token {secret}".encode())]
        )
        connected, _ = await ws.connect()
        assert connected
        events = [await ws.receive_json_from(5)]
        await ws.send_json_to({"type": "message", "content": "Hi"})
        started = time.monotonic()
        while events[-1]["type"] != "done":
            events.append(await ws.receive_json_from(WITHIN))
        elapsed = time.monotonic() - started
        await ws.disconnect()
        return events, elapsed

    events, elapsed = asyncio.run(chat())
    done = events[-1]
    assert done_events_are_lost == [done["message_id"]]  # the worker's own done never arrived
    assert elapsed < WITHIN
    assert (done["status"], done["message"]["content"]) == ("complete", "Hello, world.")
    text = "".join(e["text"] for e in events if e["type"] == "delta")
    assert text == "Hello, world."
    assert [e["type"] for e in events].count("done") == 1


def sse_events(body: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for block in body.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":"))
        if "event" in lines:
            out.append((lines["event"], json.loads(lines["data"])))
    return out


def test_sse_ends_with_the_stored_state(session: Session, secret: str) -> None:
    _, reply = services.message_send(session=session, content="Hi")

    async def read() -> tuple[str, float]:
        started = time.monotonic()
        response = await AsyncClient().get(
            f"/api/sessions/{session.pk}/messages/{reply.pk}/stream/", headers={"authorization": f"Bearer {secret}"}
        )
        assert response.status_code == 200
        body = ""
        async for chunk in response.streaming_content:  # type: ignore[attr-defined]
            body += chunk.decode() if isinstance(chunk, bytes) else chunk
        return body, time.monotonic() - started

    body, elapsed = asyncio.run(asyncio.wait_for(read(), 30))
    events = sse_events(body)
    assert elapsed < WITHIN
    assert [kind for kind, _ in events][0] == "snapshot" and [kind for kind, _ in events].count("done") == 1
    assert events[-1][0] == "done" and events[-1][1]["status"] == "complete"
    assert events[-1][1]["content"] == stored(reply.pk).content == "Hello, world."


def completion(secret: str, agent: Agent, *, stream: bool) -> tuple[Any, str, float]:
    async def call() -> tuple[Any, str, float]:
        started = time.monotonic()
        response = await AsyncClient().post(
            "/v1/chat/completions",
            {"model": agent.slug, "messages": [{"role": "user", "content": "Hi"}], "stream": stream},
            content_type="application/json",
            headers={"authorization": f"Bearer {secret}"},
        )
        body = ""
        if stream:
            async for chunk in response.streaming_content:  # type: ignore[attr-defined]
                body += chunk.decode()
        else:
            body = response.content.decode()
        return response, body, time.monotonic() - started

    return asyncio.run(asyncio.wait_for(call(), 30))


def test_a_streamed_completion_ends_with_its_stored_text(secret: str, agent: Agent) -> None:
    response, body, elapsed = completion(secret, agent, stream=True)
    assert response.status_code == 200 and elapsed < WITHIN
    chunks = [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: {")]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))
    assert text == "Hello, world."
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert body.rstrip().endswith("data: [DONE]")


def test_a_whole_completion_ends_with_its_stored_text(secret: str, agent: Agent) -> None:
    response, body, elapsed = completion(secret, agent, stream=False)
    assert response.status_code == 200 and elapsed < WITHIN
    assert json.loads(body)["choices"][0]["message"]["content"] == "Hello, world."


class Out:
    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str, ending: str = "\n") -> None:
        self.text += text + ending

    def flush(self) -> None:
        pass


def terminal_chat(user: Any) -> tuple[Any, Out]:
    """A terminal chat of ``user`` with the agent ``assistant``, printing into the returned Out."""
    from sessions_app.terminal import TerminalChat
    from sessions_app.terminal_style import Palette

    out = Out()
    chat = TerminalChat(
        out=out, palette=Palette(enabled=False), tty=False, agent_slug="assistant", username=user.username,
        session_id=None,
    )  # fmt: skip
    return chat, out


def test_the_terminal_chat_ends_the_reply_from_its_stored_state(
    user: Any, agent: Agent, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent.slug = "assistant"
    agent.save()
    monkeypatch.setattr(sys, "stdin", io.StringIO("Hi\nexit\n"))
    chat, out = terminal_chat(user)
    started = time.monotonic()
    try:
        asyncio.run(asyncio.wait_for(chat.run(), 30))
    except TimeoutError:  # say where the reply was: the follower waited for it to end
        rows = list(Message.objects.filter(role="assistant").values("pk", "status", "worker", "content", "error"))
        pytest.fail(f"the terminal chat did not end within 30 s; the replies: {rows}; printed: {out.text!r}")
    assert time.monotonic() - started < WITHIN
    assert "assistant> Hello, world.\n" in out.text
    assert Message.objects.filter(role="assistant", status="complete", content="Hello, world.").count() == 1
