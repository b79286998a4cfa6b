"""A supervised round always ends visibly: a supervisor whose model call fails, or whose worker
dies while it decides, ends the round with a note in the session, never with a user message
left waiting for ever. The worker side runs here as the worker runs it (``turn_choose``)."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from django.db import OperationalError
from django.utils import timezone
from redis.exceptions import ConnectionError as RedisConnectionError

from inference.backends.base import BackendError
from sessions_app import services
from sessions_app.models import Message, Session, TurnChoice
from sessions_app.notes import INTERRUPTED_NOTE
from sessions_app.reaper import replies_reap
from sessions_app.supervisor import turn_choose
from sessions_app.unavailable import BrokerUnavailable
from tests.fakes import FakeBackend
from tests.sessions_app.test_reply_lifecycle import fake_backend  # noqa: F401 - the autouse fixture
from tests.sessions_app.test_turns import make_agent, run_supervised, supervisor_says


@pytest.fixture
def supervised(user: Any, gguf_artifact: Any) -> Session:
    """Judge picks who speaks, the poet or the critic, at most three turns a message."""
    agents = [make_agent(gguf_artifact, slug, slug.title()) for slug in ("judge", "poet", "critic")]
    return services.session_create(
        owner=user, agents=agents, turn_policy={"kind": "supervisor", "supervisor": "judge", "max_turns": 3}
    )


def supervisor_fails(error: BaseException) -> None:
    """The supervisor's model call raises ``error``; every other agent says "Hello, world."."""

    def answer(messages: list[dict[str, str]]) -> str:
        if "Reply with exactly one word" in messages[0]["content"]:
            raise error
        return "Hello, world."

    FakeBackend.answer = answer


def after(user_message: Message) -> list[tuple[str, str, str]]:
    return [(m.role, m.status, m.content) for m in Message.objects.filter(reply_to=user_message).order_by("pk")]


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (BackendError("The GPU fell off the bus.", retryable=True), "The GPU fell off the bus."),
        (RuntimeError("engine crashed"), "internal error: RuntimeError: engine crashed"),
    ],
)
def test_a_supervisor_whose_model_call_fails_ends_the_round_with_a_note(
    supervised: Session, error: BaseException, words: str
) -> None:
    supervisor_fails(error)
    sent, _ = services.message_send(session=supervised, content="Rain or snow?")
    assert turn_choose(user_message_id=sent.pk) is None
    [(role, status, content)] = after(sent)
    assert (role, status) == ("system", "complete")
    assert content.startswith("The supervisor Judge could not pick who speaks next") and words in content
    assert "the round ends" in content
    assert list(TurnChoice.objects.filter(user_message=sent).values_list("status", flat=True)) == ["failed"]
    # The round is over: a repeated task, or the workers going on, change nothing.
    assert run_supervised(sent) and after(sent) == [(role, status, content)]


def test_a_supervisor_that_fails_after_a_turn_ends_the_round_with_a_note(supervised: Session) -> None:
    asked = supervisor_says("critic")
    sent, _ = services.message_send(session=supervised, content="Rain or snow?")
    turn_choose(user_message_id=sent.pk)
    supervisor_fails(BackendError("Out of memory loading the model."))
    chain = run_supervised(sent)
    assert [(m.role, m.agent.slug if m.agent else None, m.status) for m in chain] == [
        ("assistant", "critic", "complete"),
        ("system", None, "complete"),
    ]
    assert "Out of memory loading the model." in chain[1].content
    assert len(asked) == 1


def test_a_pick_whose_worker_died_is_ended_by_the_reaper_with_a_note(supervised: Session) -> None:
    supervisor_says("critic")
    sent, _ = services.message_send(session=supervised, content="Rain or snow?")
    # A worker claimed the pick, then died: its heartbeat stopped two minutes ago.
    TurnChoice.objects.filter(user_message=sent).update(
        status="choosing", worker="gone:1:abcdef", heartbeat_at=timezone.now() - timedelta(minutes=2)
    )
    assert after(sent) == []  # what the user saw until now: nothing, for ever
    assert replies_reap(stale_seconds=60) == 1
    assert after(sent) == [("system", "complete", INTERRUPTED_NOTE)]
    assert TurnChoice.objects.get(user_message=sent).status == "interrupted"
    # The task, redelivered once the worker is gone, finds nothing to do; the reaper runs again.
    assert turn_choose(user_message_id=sent.pk) is None
    assert replies_reap(stale_seconds=60) == 0
    assert after(sent) == [("system", "complete", INTERRUPTED_NOTE)]


def test_a_pick_still_renewed_is_not_reaped(supervised: Session) -> None:
    supervisor_says("critic")
    sent, _ = services.message_send(session=supervised, content="Rain or snow?")
    TurnChoice.objects.filter(user_message=sent).update(
        status="choosing", worker="alive:1:abcdef", heartbeat_at=timezone.now() - timedelta(seconds=5)
    )
    assert replies_reap(stale_seconds=60) == 0
    assert after(sent) == [] and TurnChoice.objects.get(user_message=sent).status == "choosing"


def test_a_pick_reaped_from_under_its_worker_queues_nothing(supervised: Session) -> None:
    """The reaper took the pick (the worker's heartbeat lapsed while the database was away): when
    the worker's answer comes it starts no turn and adds nothing to the reaper's note."""

    def answer(messages: list[dict[str, str]]) -> str:
        TurnChoice.objects.filter(user_message=sent).update(heartbeat_at=timezone.now() - timedelta(minutes=2))
        replies_reap(stale_seconds=60)
        return "critic"

    sent, _ = services.message_send(session=supervised, content="Rain or snow?")
    FakeBackend.answer = answer
    assert turn_choose(user_message_id=sent.pk) is None
    assert after(sent) == [("system", "complete", INTERRUPTED_NOTE)]


def test_a_stop_while_the_supervisor_decides_ends_the_round(supervised: Session) -> None:
    supervisor_says("critic", "poet")
    sent, _ = services.message_send(session=supervised, content="Rain or snow?")
    services.reply_stop(session=supervised)  # nothing is streaming yet: the supervisor is asked
    assert turn_choose(user_message_id=sent.pk) is None
    assert after(sent) == []
    assert TurnChoice.objects.get(user_message=sent).status == "cancelled"


def test_a_pick_that_cannot_be_queued_ends_the_round_with_a_note(
    supervised: Session, monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any
) -> None:
    def broker_down(**_: Any) -> None:
        raise RedisConnectionError("Connection refused")

    monkeypatch.setattr("sessions_app.dispatch.turn_choose_enqueue", broker_down)
    with pytest.raises(BrokerUnavailable), django_capture_on_commit_callbacks(execute=True):
        services.message_send(session=supervised, content="Rain or snow?")
    sent = Message.objects.get(session=supervised, role="user")
    [(role, _, content)] = after(sent)
    assert role == "system" and "message broker (Redis) was unavailable" in content
    assert TurnChoice.objects.get(user_message=sent).status == "failed"


@pytest.mark.django_db(transaction=True)
def test_a_slow_supervisor_keeps_its_pick_alive_while_its_worker_lives(
    supervised: Session, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The test runs the pick itself, in the thread it chooses; the reply it queues is not run.
    monkeypatch.setattr("sessions_app.dispatch.turn_choose_enqueue", lambda **_: None)
    monkeypatch.setattr("sessions_app.dispatch.reply_enqueue", lambda **_: None)
    settings.REPLY_STALE_SECONDS = 1
    settings.REPLY_HEARTBEAT_SECONDS = 0.2
    supervisor_says("critic")
    sent, _ = services.message_send(session=supervised, content="Rain or snow?")
    FakeBackend.first_delay = 3.0  # a model loading for three times REPLY_STALE_SECONDS
    try:
        picked: list[str | None] = []
        worker = threading.Thread(target=lambda: picked.append(turn_choose(user_message_id=sent.pk)))
        worker.start()
        reaped = 0
        while worker.is_alive():
            try:
                reaped += replies_reap()  # what beat runs every few seconds, here as fast as it can
            except OperationalError as exc:
                # The test database is SQLite in memory, shared between threads by table locks with
                # no waiting: a reap that meets the pick's heartbeat write is skipped, as a beat's
                # would be retried on its next round.
                if "locked" not in str(exc):
                    raise
            time.sleep(0.05)
        worker.join()
    finally:
        FakeBackend.first_delay = 0.0
    assert reaped == 0 and picked == ["critic"]
    assert [(r, s) for r, s, _ in after(sent)] == [("assistant", "queued")]
    assert TurnChoice.objects.get(user_message=sent).status == "done"
