"""The reply logic with a scripted backend: claim once, stream, stop, fail, reap."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.utils import timezone

from agents.models import Agent
from inference.cache import model_cache
from sessions_app import services
from sessions_app.live import stream_buffer
from sessions_app.models import Message, Session
from sessions_app.reaper import replies_reap
from sessions_app.replies import reply_generate
from tests.fakes import FakeBackend, use_backend


@pytest.fixture(autouse=True)
def fake_backend(settings: Any) -> Iterator[type[FakeBackend]]:
    use_backend(settings, "tests.fakes.FakeBackend")
    settings.REPLY_BROADCAST_INTERVAL_MS = 1
    FakeBackend.script = ["Hello", ", ", "world", "."]
    FakeBackend.delay = 0.0
    FakeBackend.fail_with = None
    FakeBackend.seen_messages = []
    FakeBackend.on_chunk = None
    FakeBackend.answer = None
    yield FakeBackend
    FakeBackend.answer = None
    model_cache().clear()


@pytest.fixture
def session(user: Any, agent: Agent) -> Session:
    agent.system_prompt = "You are terse."
    agent.save()
    return services.session_create(owner=user, agent=agent)


def events_of(session: Session) -> Any:
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(session.group_name, channel)

    def drain() -> list[dict[str, Any]]:
        out = []
        while True:
            try:
                out.append(async_to_sync(layer.receive_nowait)(channel))  # type: ignore[attr-defined]
            except Exception:
                return out

    return drain


def queued_reply(session: Session, text: str = "Hi") -> Message:
    _, reply = services.message_send(session=session, content=text)
    return reply


def test_a_reply_streams_and_is_saved_with_its_stats(session: Session) -> None:
    reply = queued_reply(session)
    reply_generate(message_id=reply.pk)
    reply.refresh_from_db()
    assert reply.status == "complete"
    assert reply.content == "Hello, world."
    assert reply.completion_tokens == 4 and reply.prompt_tokens and reply.prompt_tokens > 0
    assert reply.seq >= 1 and reply.finished_at is not None
    assert reply.finish_reason == "stop"
    # The backend saw the system prompt, then the user's message.
    assert FakeBackend.seen_messages[0] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi"},
    ]
    assert stream_buffer().snapshot(reply.pk) is None  # the live buffer is cleaned up


def test_running_the_task_twice_generates_one_reply(session: Session) -> None:
    reply = queued_reply(session)
    assert reply_generate(message_id=reply.pk) is True
    first = Message.objects.get(pk=reply.pk)
    FakeBackend.script = ["Something", " else"]
    assert reply_generate(message_id=reply.pk) is False  # nothing left to claim
    again = Message.objects.get(pk=reply.pk)
    assert (again.content, again.finished_at) == (first.content, first.finished_at)
    assert len(FakeBackend.seen_messages) == 1


def test_history_is_sent_oldest_first_without_failed_replies(session: Session) -> None:
    first = queued_reply(session, "One")
    reply_generate(message_id=first.pk)
    failed = queued_reply(session, "Two")
    Message.objects.filter(pk=failed.pk).update(status="failed", content="")
    third = queued_reply(session, "Three")
    reply_generate(message_id=third.pk)
    roles = [(m["role"], m["content"]) for m in FakeBackend.seen_messages[-1]]
    assert roles == [
        ("system", "You are terse."),
        ("user", "One"),
        ("assistant", "Hello, world."),
        ("user", "Two"),
        ("user", "Three"),
    ]


def test_a_stop_request_ends_the_reply_cancelled_with_its_partial_text(session: Session, settings: Any) -> None:
    settings.REPLY_STOP_POLL_MS = 10
    FakeBackend.script = [f"w{i} " for i in range(200)]
    FakeBackend.delay = 0.002
    FakeBackend.on_chunk = lambda n: services.reply_stop(session=session) if n == 5 else None
    reply = queued_reply(session)
    reply_generate(message_id=reply.pk)
    reply.refresh_from_db()
    assert (reply.status, reply.finish_reason) == ("cancelled", "cancelled")
    assert reply.content.startswith("w0 w1 w2 w3 w4 ")
    assert len(reply.content.split()) < 50


def test_a_backend_error_fails_the_reply_with_an_actionable_message(session: Session, settings: Any) -> None:
    use_backend(settings, "tests.fakes.BrokenBackend")
    reply = queued_reply(session)
    reply_generate(message_id=reply.pk)
    reply.refresh_from_db()
    assert reply.status == "failed"
    assert "driver" in reply.error


def test_an_error_mid_stream_keeps_the_text_so_far(session: Session) -> None:
    FakeBackend.fail_with = RuntimeError("engine exploded")
    reply = queued_reply(session)
    reply_generate(message_id=reply.pk)
    reply.refresh_from_db()
    assert reply.status == "failed"
    assert reply.content == "Hello, "
    assert "engine exploded" in reply.error


def test_the_reaper_interrupts_stale_replies_and_keeps_the_latest_text(session: Session) -> None:
    reply = queued_reply(session)
    old = timezone.now() - timezone.timedelta(minutes=5)
    Message.objects.filter(pk=reply.pk).update(status="streaming", heartbeat_at=old, content="Once upon", seq=2)
    stream_buffer().append(reply.pk, 1, "Once upon")
    stream_buffer().append(reply.pk, 3, " a time")
    fresh = queued_reply(session, "other")
    Message.objects.filter(pk=fresh.pk).update(status="streaming", heartbeat_at=timezone.now())
    assert replies_reap(stale_seconds=60) == 1
    reply.refresh_from_db()
    assert (reply.status, reply.content, reply.seq) == ("interrupted", "Once upon a time", 3)
    assert Message.objects.get(pk=fresh.pk).status == "streaming"
    # A late-running worker cannot overwrite the reaped reply.
    reply_generate(message_id=reply.pk)
    assert Message.objects.get(pk=reply.pk).status == "interrupted"
