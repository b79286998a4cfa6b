"""A websocket frame carrying a NUL or a lone surrogate, or nested too deeply, gets an ``error``
event naming the place; nothing is stored and the socket stays open (it used to close, or on
SQLite store the NUL). ``tests/integration/test_bad_input.py`` sends the same on PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator

from agents.models import Agent
from inference.cache import model_cache
from sessions_app import services
from sessions_app.models import Message, Session
from sessions_app.tokens import token_create
from tests.fakes import FakeBackend, use_backend

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def scripted(settings: Any) -> Iterator[None]:
    use_backend(settings, "tests.fakes.FakeBackend")
    FakeBackend.script = ["Hello", "."]
    FakeBackend.delay = 0.0
    yield
    model_cache().clear()


async def _exchange(session: Session, secret: str, text: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Send ``text``; return the first event after it and the answer to a ping sent afterwards."""
    from chatsite.asgi import application

    ws = WebsocketCommunicator(
        application, f"/ws/sessions/{session.pk}/", headers=[(b"authorization", f"Token {secret}".encode())]
    )
    connected, _ = await ws.connect()
    assert connected
    assert (await ws.receive_json_from(5))["type"] == "session"
    await ws.send_to(text_data=text)
    event = await ws.receive_json_from(10)
    await ws.send_json_to({"type": "ping"})
    pong = await ws.receive_json_from(10)
    await ws.disconnect()
    return event, pong


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        ({"type": "message", "content": "a\x00b"}, "content: contains a NUL character"),
        ({"type": "message", "content": "a\udfffb"}, "content: contains a lone surrogate (\\udfff)"),
        ({"type": "message", "content": "hi", "params": {"system_prompt": "\x00"}}, "params.system_prompt: "),
        ({"type": "message", "content": "hi", "compare": ["helper", "\ud800"]}, "compare[1]: "),
        ({"type": "edit", "message_id": 1, "content": "\x00"}, "content: contains a NUL character"),
        ({"type": "message", "content": "hi", "\x00": 1}, '["\\u0000"]: the key contains a NUL character'),
    ],
)
def test_a_frame_with_bad_text_gets_an_error_and_stores_nothing(
    user: Any, agent: Agent, frame: dict[str, Any], message: str
) -> None:
    session = services.session_create(owner=user, agent=agent)
    secret = token_create(user=user, name="ws")[1]
    event, pong = asyncio.run(_exchange(session, secret, json.dumps(frame)))
    assert (event["type"], event["code"]) == ("error", "invalid_text"), event
    assert event["message"].startswith(message), event["message"]
    assert pong == {"type": "pong"}
    assert Message.objects.filter(session=session).count() == 0


def test_a_frame_nested_too_deeply_gets_an_error(user: Any, agent: Agent) -> None:
    session = services.session_create(owner=user, agent=agent)
    secret = token_create(user=user, name="ws")[1]
    text = '{"type": "message", "content": ' + "[" * 100_000 + "]" * 100_000 + "}"
    event, pong = asyncio.run(_exchange(session, secret, text))
    assert (event["type"], event["code"]) == ("error", "bad_json"), event
    assert pong == {"type": "pong"}
    assert Message.objects.filter(session=session).count() == 0
