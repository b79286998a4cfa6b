"""The one reply follower: each delta once and in order, exactly one done, and the stored end
when the done event itself never comes."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from agents.models import Agent
from sessions_app import services
from sessions_app.follow import session_follow
from sessions_app.live import stream_buffer
from sessions_app.models import Message, Session
from sessions_app.selectors import message_payload

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def no_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sessions_app.dispatch.reply_enqueue", lambda **_: None)


@pytest.fixture
def session(user: Any, agent: Agent) -> Session:
    return services.session_create(owner=user, agent=agent)


def streaming_reply(session: Session, content: str = "", seq: int = 0) -> Message:
    _, reply = services.message_send(session=session, content="Hi")
    Message.objects.filter(pk=reply.pk).update(status="streaming", content=content, seq=seq)
    reply.refresh_from_db()
    return reply


def delta(reply: Message, seq: int, text: str) -> dict[str, Any]:
    return {"type": "chat.delta", "message_id": reply.pk, "seq": seq, "text": text}


def follow(session: Session, events: list[Any], *, reply_id: int | None = None, until: int = 50) -> list[Any]:
    """Feed ``events`` (dicts, or callables run at that point) and collect what the follower yields,
    until ``until`` events other than ``idle`` (a busy machine makes the follower check, and say
    ``idle``, between any two events)."""

    async def run() -> list[Any]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        out: list[Any] = []
        follower = session_follow(session=session, receive=queue.get, reply_id=reply_id, check_seconds=0.2)

        async def collect() -> None:
            async for event in follower:
                out.append(event)
                if len(kinds(out)) >= until:
                    return

        task = asyncio.create_task(collect())
        while not out and not task.done():  # the snapshot first, as a door reads it on joining
            await asyncio.sleep(0.01)
        for item in events:
            if callable(item):
                await sync_to_async(item)()
            else:
                queue.put_nowait(item)
            await asyncio.sleep(0.01)
        try:
            await asyncio.wait_for(task, 10)
        except TimeoutError:
            pass
        return out

    return asyncio.run(run())


def kinds(events: list[Any]) -> list[str]:
    return [e["type"] for e in events if e["type"] != "idle"]


def last(events: list[Any], kind: str) -> dict[str, Any]:
    return next(e for e in reversed(events) if e["type"] == kind)


def test_a_lost_done_ends_the_reply_from_its_stored_state_within_seconds(session: Session) -> None:
    reply = streaming_reply(session, "Hel", 1)

    def finished_without_telling() -> None:
        Message.objects.filter(pk=reply.pk).update(status="complete", content="Hello world", seq=3)

    started = time.monotonic()
    events = follow(session, [delta(reply, 2, "lo"), finished_without_telling], reply_id=reply.pk)
    assert time.monotonic() - started < 5
    assert kinds(events) == ["session", "delta", "delta", "done"]
    assert events[0]["messages"][0]["content"] == "Hel"
    assert [e["text"] for e in events if e["type"] == "delta"] == ["lo", " world"]  # the missing text first
    done = last(events, "done")
    assert done["status"] == "complete" and done["message"]["content"] == "Hello world"


def test_each_delta_is_passed_once_in_order_and_nothing_after_done(session: Session) -> None:
    reply = streaming_reply(session)
    done = {**message_payload(reply), "status": "complete", "content": "ab", "seq": 2}
    events = follow(
        session,
        [
            delta(reply, 1, "a"),
            delta(reply, 1, "a"),  # a duplicate
            delta(reply, 2, "b"),
            {"type": "chat.done", "message": done},
            {"type": "chat.done", "message": done},  # a second done
            delta(reply, 3, "late"),  # after done
        ],
        until=4,
    )
    assert kinds(events) == ["session", "delta", "delta", "done"]
    assert "".join(e["text"] for e in events if e["type"] == "delta") == "ab"


def test_a_lost_delta_is_filled_from_the_live_buffer(session: Session) -> None:
    reply = streaming_reply(session)
    buffer = stream_buffer()
    try:
        events = follow(
            session,
            [
                lambda: buffer.append(reply.pk, 1, "a"),
                delta(reply, 1, "a"),
                lambda: buffer.append(reply.pk, 2, "b"),  # its delta is lost on the way
                lambda: buffer.append(reply.pk, 3, "c"),
                delta(reply, 3, "c"),
            ],
            until=3,
        )
    finally:
        stream_buffer().discard(reply.pk)
    deltas = [(e["seq"], e["text"]) for e in events if e["type"] == "delta"]
    assert deltas == [(1, "a"), (3, "bc")]


def test_a_reply_deleted_without_an_event_ends_the_follower(session: Session) -> None:
    reply = streaming_reply(session, "Hel", 1)
    events = follow(session, [lambda: Message.objects.filter(pk=reply.pk).delete()], reply_id=reply.pk)
    assert kinds(events) == ["session", "deleted"]
    assert last(events, "deleted")["message_ids"] == [reply.pk]


def test_a_reply_already_finished_is_one_snapshot_and_one_done(session: Session) -> None:
    reply = streaming_reply(session)
    Message.objects.filter(pk=reply.pk).update(status="cancelled", content="Half")
    events = follow(session, [], reply_id=reply.pk)
    assert kinds(events) == ["session", "done"]
    assert last(events, "done")["status"] == "cancelled"


def test_idle_checks_keep_the_one_receive_waiting(session: Session) -> None:
    """A receive cancelled by a check would make the pub/sub channel layer drop the channel and
    whatever arrives for it until the next receive: the follower keeps one receive across checks."""
    reply = streaming_reply(session)
    calls: list[str] = []

    async def run() -> list[Any]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        async def receive() -> dict[str, Any]:
            calls.append("receive")
            try:
                return await queue.get()
            except asyncio.CancelledError:
                calls.append("cancelled")
                raise

        out: list[Any] = []
        follower = session_follow(session=session, receive=receive, reply_id=reply.pk, check_seconds=0.1)
        async for event in follower:
            out.append(event)
            if len([e for e in out if e["type"] == "idle"]) == 5:
                queue.put_nowait(delta(reply, 1, "a"))
            if event["type"] == "delta":
                await follower.aclose()
        return out

    events = asyncio.run(run())
    assert kinds(events) == ["session", "delta"]
    assert calls == ["receive"]  # one receive through five checks, never cancelled
