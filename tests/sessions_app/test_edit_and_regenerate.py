"""Regenerate replaces the last reply; editing a message replaces the conversation after it."""

from __future__ import annotations

from typing import Any

import pytest

from agents.models import Agent
from sessions_app import services
from sessions_app.models import Message, Session


@pytest.fixture
def chat(user: Any, agent: Agent) -> Session:
    session = services.session_create(owner=user, agent=agent)
    for text in ("first", "second"):
        sent, reply = services.message_send(session=session, content=text)
        Message.objects.filter(pk=reply.pk).update(status="complete", content=f"answer to {text}")
    return session


def contents(session: Session) -> list[tuple[str, str, str]]:
    return [(m.role, m.content, m.status) for m in session.messages.order_by("pk")]


def test_regenerate_replaces_the_last_reply_with_a_queued_one(
    chat: Session, django_capture_on_commit_callbacks: Any, monkeypatch: Any
) -> None:
    queued: list[int] = []
    monkeypatch.setattr("sessions_app.dispatch.reply_enqueue", lambda *, message_id, queue: queued.append(message_id))
    with django_capture_on_commit_callbacks(execute=True):
        reply = services.reply_regenerate(session=chat)
    assert contents(chat) == [
        ("user", "first", "complete"), ("assistant", "answer to first", "complete"),
        ("user", "second", "complete"), ("assistant", "", "queued"),
    ]  # fmt: skip
    assert queued == [reply.pk]
    assert reply.reply_to is not None and reply.reply_to.content == "second"


def test_editing_a_message_replaces_everything_after_it(chat: Session) -> None:
    first = chat.messages.get(content="first")
    edited, reply = services.message_edit(session=chat, message_id=first.pk, content="first, reworded")
    assert contents(chat) == [("user", "first, reworded", "complete"), ("assistant", "", "queued")]
    assert reply.reply_to_id == edited.pk


def test_editing_checks_the_message_and_the_content(chat: Session, other_user: Any, agent: Agent) -> None:
    stranger = services.session_create(owner=other_user, agent=agent)
    theirs, _ = services.message_send(session=stranger, content="not yours")
    before = contents(chat)
    with pytest.raises(services.ChatError) as missing:
        services.message_edit(session=chat, message_id=theirs.pk, content="hijack")
    assert missing.value.code == "not_found"
    with pytest.raises(services.ChatError) as empty:
        services.message_edit(session=chat, message_id=chat.messages.first().pk, content="  ")  # type: ignore[union-attr]
    assert empty.value.code == "empty_content"
    assert contents(chat) == before
    assert Message.objects.get(pk=theirs.pk).content == "not yours"


def test_regenerate_in_an_empty_session_is_an_error(user: Any, agent: Agent) -> None:
    session = services.session_create(owner=user, agent=agent)
    with pytest.raises(services.ChatError, match="no message"):
        services.reply_regenerate(session=session)
