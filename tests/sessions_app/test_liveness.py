"""Liveness: a reply is reaped only when its worker is gone, and a reply taken from a worker stops it.

These run the real reply code, heartbeat thread and reaper against the database with a scripted
backend; the integration tests do the same with a slow OpenAI-compatible server and a SIGKILL.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.utils import timezone

from agents.models import Agent
from inference.cache import model_cache
from sessions_app import services
from sessions_app.dispatch import replies_recover_embedded
from sessions_app.models import Message, Session
from sessions_app.reaper import process_started_at, replies_reap
from sessions_app.replies import reply_generate
from tests.fakes import FakeBackend, use_backend

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def fast_liveness(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    use_backend(settings, "tests.fakes.FakeBackend")
    # The tests run each reply themselves, in the thread they choose.
    monkeypatch.setattr("sessions_app.dispatch.reply_enqueue", lambda **_: None)
    settings.REPLY_STALE_SECONDS = 1
    settings.REPLY_HEARTBEAT_SECONDS = 0.2
    settings.REPLY_BROADCAST_INTERVAL_MS = 1
    FakeBackend.script = ["Hello", ", ", "world", "."]
    FakeBackend.delay = 0.0
    FakeBackend.first_delay = 0.0
    FakeBackend.on_chunk = None
    FakeBackend.seen_messages = []
    yield
    FakeBackend.first_delay = 0.0
    FakeBackend.on_chunk = None
    model_cache().clear()


@pytest.fixture
def session(user: Any, agent: Agent) -> Session:
    return services.session_create(owner=user, agent=agent)


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """What the workers broadcast, in order (recorded where it leaves for the channel layer)."""
    out: list[tuple[str, Any]] = []
    monkeypatch.setattr(
        "sessions_app.broadcast.delta_buffered_send",
        lambda sid, mid, seq, text, part="content": out.append(("delta", text)),
    )
    monkeypatch.setattr("sessions_app.broadcast.done_send", lambda sid, message: out.append(("done", message)))
    return out


def generate_in_background(message_id: int) -> threading.Thread:
    thread = threading.Thread(target=reply_generate, kwargs={"message_id": message_id})
    thread.start()
    return thread


def test_a_slow_first_token_is_not_reaped_while_its_worker_lives(session: Session, sent: list[Any]) -> None:
    FakeBackend.first_delay = 3.0  # three times REPLY_STALE_SECONDS before anything comes
    _, reply = services.message_send(session=session, content="Hi")
    worker = generate_in_background(reply.pk)
    reaped = 0
    while worker.is_alive():
        reaped += replies_reap()  # what beat runs every few seconds, here as fast as it can
        time.sleep(0.05)
    worker.join()
    reply.refresh_from_db()
    assert reaped == 0
    assert (reply.status, reply.content) == ("complete", "Hello, world.")
    assert [kind for kind, _ in sent].count("done") == 1 and sent[-1][0] == "done"
    assert "".join(text for kind, text in sent if kind == "delta") == "Hello, world."


def test_a_reply_reaped_from_under_its_worker_stops_it_and_nothing_more_is_sent(
    session: Session, sent: list[Any]
) -> None:
    FakeBackend.script = [f"w{i} " for i in range(300)]
    FakeBackend.delay = 0.005
    _, reply = services.message_send(session=session, content="Hi")
    produced: list[int] = []

    def taken_away(n: int) -> None:
        produced.append(n)
        if n == 5:  # another process declares the worker dead and ends the reply
            Message.objects.filter(pk=reply.pk).update(status="interrupted", content="taken")

    FakeBackend.on_chunk = taken_away
    reply_generate(message_id=reply.pk)
    reply.refresh_from_db()
    assert (reply.status, reply.content) == ("interrupted", "taken")  # not overwritten
    assert "done" not in [kind for kind, _ in sent]  # the reaper announced the end, not this worker
    words = "".join(text for kind, text in sent if kind == "delta").split()
    assert words == [f"w{i}" for i in range(len(words))] and len(words) <= 5  # nothing after the takeover
    assert max(produced) < 50  # and it stopped generating


def test_a_reply_deleted_by_an_edit_stops_its_worker(session: Session) -> None:
    FakeBackend.script = [f"w{i} " for i in range(300)]
    FakeBackend.delay = 0.005
    user_message, reply = services.message_send(session=session, content="Hi")
    produced: list[int] = []

    def edited(n: int) -> None:
        produced.append(n)
        if n == 5:
            Message.objects.filter(pk=reply.pk).delete()

    FakeBackend.on_chunk = edited
    reply_generate(message_id=reply.pk)
    assert not Message.objects.filter(pk=reply.pk).exists()
    assert max(produced) < 50  # it stopped, rather than generating 300 words for nobody


def test_the_heartbeat_renews_a_claimed_reply_before_its_first_token(session: Session) -> None:
    FakeBackend.first_delay = 1.5
    _, reply = services.message_send(session=session, content="Hi")
    worker = generate_in_background(reply.pk)
    time.sleep(0.2)
    claimed = Message.objects.get(pk=reply.pk).heartbeat_at
    time.sleep(0.8)
    renewed = Message.objects.get(pk=reply.pk)
    worker.join()
    assert renewed.status == "streaming" and renewed.content == ""
    assert claimed is not None and renewed.heartbeat_at is not None and renewed.heartbeat_at > claimed


class InlinePool:
    def submit(self, fn: Any, *args: Any) -> None:
        fn(*args)


def test_a_restarted_embedded_process_recovers_what_the_last_one_left(session: Session) -> None:
    before_this_process = process_started_at() - timezone.timedelta(minutes=1)
    _, orphan = services.message_send(session=session, content="left streaming by a dead process")
    Message.objects.filter(pk=orphan.pk).update(
        status="streaming", started_at=before_this_process, heartbeat_at=before_this_process, content="Once"
    )
    _, sibling = services.message_send(session=session, content="streaming in a live terminal chat")
    Message.objects.filter(pk=sibling.pk).update(
        status="streaming", started_at=before_this_process, heartbeat_at=timezone.now()
    )
    _, never_started = services.message_send(session=session, content="left queued")
    Message.objects.filter(pk=never_started.pk).update(status="queued")

    assert replies_recover_embedded(InlinePool()) == 1  # type: ignore[arg-type]
    orphan.refresh_from_db()
    assert (orphan.status, orphan.content) == ("interrupted", "Once")
    assert Message.objects.get(pk=sibling.pk).status == "streaming"  # its process renews it
    recovered = Message.objects.get(pk=never_started.pk)
    assert (recovered.status, recovered.content) == ("complete", "Hello, world.")


def test_the_heartbeat_thread_runs_only_while_a_reply_is_held() -> None:
    from sessions_app.liveness import REPLIES, heartbeat

    beat = heartbeat()
    lease = beat.hold(REPLIES, 10_001)
    first = beat._thread
    assert first is not None and first.is_alive()
    beat.release(lease)
    first.join(timeout=3)
    assert not first.is_alive() and beat._thread is None  # no thread left polling an idle process
    second = beat.hold(REPLIES, 10_002)
    try:
        assert beat._thread is not None and beat._thread.is_alive() and beat._thread is not first
    finally:
        beat.release(second)
