"""Deltas are batched per door: a streamed ``/v1`` answer gets each token as the engine makes it
(an API client measures inter-token latency), the browser's websocket gets at most one delta per
REPLY_BROADCAST_INTERVAL_MS, also for a reply made token by token that it happens to watch. The
replies run in the embedded default's real thread pool on a scripted backend that writes a token
every 5 ms (200 tokens/s)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from django.test import AsyncClient

from agents.models import Agent
from inference.cache import model_cache
from sessions_app import services
from sessions_app.consumers import _Coalescer
from sessions_app.models import Message
from sessions_app.tokens import token_create
from tests.fakes import FakeBackend, use_backend

pytestmark = pytest.mark.django_db(transaction=True)

TOKENS = [f"t{i} " for i in range(40)]


@pytest.fixture(autouse=True)
def fast_engine(settings: Any) -> Iterator[None]:
    use_backend(settings, "tests.fakes.FakeBackend")
    settings.REPLY_BROADCAST_INTERVAL_MS = 50
    FakeBackend.script = TOKENS
    FakeBackend.delay = 0.005
    yield
    FakeBackend.delay = 0.0
    model_cache().clear()


def test_a_streamed_v1_answer_comes_token_by_token(user: Any, agent: Agent) -> None:
    secret = token_create(user=user, name="v1")[1]

    async def call() -> str:
        response = await AsyncClient().post(
            "/v1/chat/completions",
            {"model": agent.slug, "messages": [{"role": "user", "content": "Hi"}], "stream": True},
            content_type="application/json", headers={"authorization": f"Bearer {secret}"},
        )  # fmt: skip
        return "".join([chunk.decode() async for chunk in response.streaming_content])  # type: ignore[attr-defined]

    body = asyncio.run(asyncio.wait_for(call(), 30))
    chunks = [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: {")]
    pieces = [
        c["choices"][0]["delta"]["content"]
        for c in chunks
        if c.get("choices") and c["choices"][0]["delta"].get("content")
    ]
    assert "".join(pieces) == "".join(TOKENS)
    assert len(pieces) >= len(TOKENS) - 2  # one chunk per token (the first may carry two)
    assert Message.objects.get(role="assistant").params["cadence"] == "token"


async def _watch(session_id: int, secret: str, frame: dict[str, Any] | None) -> list[dict[str, Any]]:
    from chatsite.asgi import application

    ws = WebsocketCommunicator(
        application, f"/ws/sessions/{session_id}/", headers=[(b"authorization", f"Token {secret}".encode())]
    )
    connected, _ = await ws.connect()
    assert connected
    events = [await ws.receive_json_from(5)]
    if frame is not None:
        await ws.send_json_to(frame)
    while events[-1]["type"] != "done":
        events.append(await ws.receive_json_from(10))
    await ws.disconnect()
    return events


def test_the_browser_gets_batches_of_a_reply_made_for_an_api_client(user: Any, agent: Agent) -> None:
    session = services.session_create(owner=user, agent=agent)
    secret = token_create(user=user, name="ws")[1]

    async def both() -> list[dict[str, Any]]:
        watching = asyncio.ensure_future(_watch(session.pk, secret, None))
        await asyncio.sleep(0.5)  # the page is open before the API client asks
        await asyncio.to_thread(
            services.message_send, session=session, content="Hi", agent=agent, params={"cadence": "token"}
        )
        return await watching

    events = asyncio.run(asyncio.wait_for(both(), 30))
    deltas = [e for e in events if e["type"] == "delta"]
    assert "".join(d["text"] for d in deltas) == "".join(TOKENS)
    # 40 tokens in about 0.2 s: a handful of batches, not 40 events.
    assert 1 <= len(deltas) <= 10, len(deltas)
    assert deltas[-1]["seq"] == events[-1]["message"]["seq"]


def test_a_websocket_reply_is_made_in_batches(user: Any, agent: Agent) -> None:
    session = services.session_create(owner=user, agent=agent)
    secret = token_create(user=user, name="ws")[1]
    events = asyncio.run(asyncio.wait_for(_watch(session.pk, secret, {"type": "message", "content": "Hi"}), 30))
    assert "".join(e["text"] for e in events if e["type"] == "delta") == "".join(TOKENS)
    reply = Message.objects.get(role="assistant")
    assert "cadence" not in (reply.params or {})
    assert reply.seq <= 10  # the worker sent batches: seq counts them


def test_the_coalescer_keeps_order_and_text() -> None:
    sent: list[dict[str, Any]] = []

    async def send(event: dict[str, Any]) -> None:
        sent.append(event)

    async def run() -> None:
        c = _Coalescer(send, 0.05)
        for seq in range(1, 21):
            await c.delta({"type": "delta", "message_id": 1, "seq": seq, "text": str(seq % 10)})
            await asyncio.sleep(0.002)
        await c.other({"type": "done", "message_id": 1})
        await asyncio.sleep(0.1)

    asyncio.run(run())
    deltas = [e for e in sent if e["type"] == "delta"]
    assert "".join(d["text"] for d in deltas) == "".join(str(s % 10) for s in range(1, 21))
    assert [d["seq"] for d in deltas] == sorted(d["seq"] for d in deltas) and deltas[-1]["seq"] == 20
    assert len(deltas) <= 3 and sent[-1]["type"] == "done"
