"""A websocket message may carry per-reply settings (``params``), as ``/v1`` does: the benchmark
asks every door for the same greedy reply of the same length. Bad settings get an error event
and store nothing."""

from __future__ import annotations

import asyncio
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


async def _exchange(session: Session, secret: str, frame: dict[str, Any]) -> list[dict[str, Any]]:
    from chatsite.asgi import application

    ws = WebsocketCommunicator(
        application, f"/ws/sessions/{session.pk}/", headers=[(b"authorization", f"Token {secret}".encode())]
    )
    connected, _ = await ws.connect()
    assert connected
    events = [await ws.receive_json_from(5)]
    await ws.send_json_to(frame)
    while events[-1]["type"] not in ("done", "error"):
        events.append(await ws.receive_json_from(10))
    await ws.disconnect()
    return events


def test_params_reach_the_reply(user: Any, agent: Agent) -> None:
    session = services.session_create(owner=user, agent=agent)
    secret = token_create(user=user, name="ws")[1]
    params = {"max_tokens": 7, "temperature": 0, "top_p": 1, "repetition_penalty": 1.0, "seed": 3,
              "system_prompt": "Be brief."}  # fmt: skip
    events = asyncio.run(_exchange(session, secret, {"type": "message", "content": "Hi", "params": params}))
    assert events[-1]["type"] == "done" and events[-1]["status"] == "complete"
    reply = Message.objects.get(pk=events[-1]["message_id"])
    assert reply.params == {"max_tokens": 7, "temperature": 0.0, "top_p": 1.0, "repetition_penalty": 1.0, "seed": 3,
                            "system_prompt": "Be brief."}  # fmt: skip


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"max_tokens": 0}, "params.max_tokens must be between 1"),
        ({"max_tokens": 100_000}, "this agent allows at most"),
        ({"temperature": "hot"}, "params.temperature must be a number"),
        ({"max_tokens": 1.5}, "params.max_tokens must be an integer"),
        ({"logit_bias": {}}, "Unknown setting params.logit_bias"),
        ("greedy", "params must be an object"),
    ],
)
def test_bad_params_get_an_error_and_store_nothing(user: Any, agent: Agent, params: Any, message: str) -> None:
    session = services.session_create(owner=user, agent=agent)
    secret = token_create(user=user, name="ws")[1]
    frame = {"type": "message", "content": "Hi", "agent": agent.slug, "params": params}
    events = asyncio.run(_exchange(session, secret, frame))
    assert events[-1]["type"] == "error" and events[-1]["code"] == "invalid_params"
    assert message in events[-1]["message"], events[-1]["message"]
    assert Message.objects.filter(session=session).count() == 0
