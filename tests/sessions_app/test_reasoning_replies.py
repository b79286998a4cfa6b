"""A reasoning model's reply, on the worker with a scripted backend whose chat template opens
``<think>`` (as QwQ-32B's does): its thinking and its answer are sent, buffered and stored apart,
a client joining mid-reply gets both, and later prompts leave the thinking out."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from agents.models import Agent
from inference.cache import model_cache
from sessions_app import services
from sessions_app.live import LiveText, MemoryStreamBuffer, RedisStreamBuffer, StreamBuffer, stream_buffer
from sessions_app.models import Message, Session
from sessions_app.replies import reply_generate
from sessions_app.selectors import message_payload, message_payload_live, session_export
from sessions_app.web import export_markdown
from tests.fakes import FakeBackend, use_backend
from tests.sessions_app.test_follow import follow, kinds, last, streaming_reply
from tools.launch import PrivateRedis

QWQ_TEMPLATE = "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n<think>\\n' }}{%- endif %}"
# QwQ's output: the prompt opened the thinking, so only its end is written; tags cut anywhere.
SCRIPT = ["Okay", ", 2 and 2", ".\n</", "think>", "\n\n", "It is", " 4."]
THINKING, ANSWER = "Okay, 2 and 2.", "It is 4."


class ThinkingBackend(FakeBackend):
    """The scripted backend with a reasoning model's chat template."""

    def chat_template(self) -> str:
        return QWQ_TEMPLATE


@pytest.fixture(autouse=True)
def thinking_backend(settings: Any) -> Iterator[None]:
    use_backend(settings, "tests.sessions_app.test_reasoning_replies.ThinkingBackend")
    settings.REPLY_BROADCAST_INTERVAL_MS = 0
    ThinkingBackend.script = SCRIPT
    ThinkingBackend.delay = 0.0
    ThinkingBackend.seen_messages = []
    ThinkingBackend.on_chunk = None
    yield
    ThinkingBackend.on_chunk = None
    model_cache().clear()


@pytest.fixture
def session(user: Any, agent: Agent) -> Session:
    return services.session_create(owner=user, agent=agent)


@pytest.fixture
def deltas(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, str, str]]:
    """Each delta the worker sends: its seq, part and text (the live buffer is written as always)."""
    sent: list[tuple[int, str, str]] = []

    def send(sid: int, mid: int, seq: int, text: str, part: str = "content") -> None:
        stream_buffer().append(mid, seq, text, part)
        sent.append((seq, part, text))

    monkeypatch.setattr("sessions_app.broadcast.delta_buffered_send", send)
    return sent


def generated(session: Session, text: str = "What is 2 and 2?") -> Message:
    _, reply = services.message_send(session=session, content=text)
    reply_generate(message_id=reply.pk)
    reply.refresh_from_db()
    return reply


def test_the_thinking_and_the_answer_are_stored_apart(session: Session, deltas: list[Any]) -> None:
    reply = generated(session)
    assert (reply.status, reply.reasoning, reply.content) == ("complete", THINKING, ANSWER)
    assert reply.reasoning_tokens == 4  # the chunks up to and with the closing tag
    assert reply.reasoning_ms is not None and reply.reasoning_ms >= 0
    # Each delta extends one part, the thinking's first, and has a seq of its own.
    assert [seq for seq, _, _ in deltas] == list(range(1, len(deltas) + 1)) and reply.seq == len(deltas)
    parts = [part for _, part, _ in deltas]
    assert parts == sorted(parts, key=lambda part: part != "reasoning") and set(parts) == {"reasoning", "content"}
    assert "".join(t for _, p, t in deltas if p == "reasoning") == THINKING
    assert "".join(t for _, p, t in deltas if p == "content") == ANSWER
    payload = message_payload(reply)
    assert (payload["reasoning"], payload["content"], payload["stats"]["reasoning_tokens"]) == (THINKING, ANSWER, 4)


def test_a_client_joining_mid_reply_gets_the_thinking_and_the_answer_so_far(
    session: Session, deltas: list[Any]
) -> None:
    seen: dict[int, dict[str, Any]] = {}

    def look(produced: int) -> None:  # after each chunk, what a client joining now reads
        row = Message.objects.select_related("agent").get(role="assistant", session=session)
        seen[produced] = message_payload_live(row)

    ThinkingBackend.on_chunk = look
    generated(session)
    assert (seen[2]["reasoning"], seen[2]["content"]) == ("Okay, 2 and 2", "")
    assert (seen[4]["reasoning"], seen[4]["content"]) == (THINKING, "")
    assert (seen[6]["reasoning"], seen[6]["content"]) == (THINKING, "It is")
    assert seen[6]["seq"] == len(deltas) - 1  # the last delta, " 4.", is still to come


def test_a_later_prompt_leaves_the_earlier_thinking_out(session: Session) -> None:
    generated(session)
    generated(session, "And 3 and 3?")
    second = ThinkingBackend.seen_messages[1]
    assert {"role": "assistant", "content": ANSWER} in second
    assert not any("Okay" in m["content"] or "think>" in m["content"] for m in second)


def test_an_agent_that_does_not_reason_keeps_the_tags_in_its_answer(session: Session, agent: Agent) -> None:
    agent.reasoning = Agent.Reasoning.OFF
    agent.save()
    reply = generated(session)
    assert (reply.reasoning, reply.content) == ("", "".join(SCRIPT))
    assert reply.reasoning_ms is None and reply.reasoning_tokens is None


def test_a_thinking_that_never_ends_is_all_reasoning(session: Session) -> None:
    ThinkingBackend.script = ["Let me think", " about it", " more"]
    reply = generated(session)
    assert (reply.reasoning, reply.content) == ("Let me think about it more", "")
    assert reply.reasoning_tokens == 3 and reply.reasoning_ms is not None


def test_the_exports_hold_the_thinking_apart_and_markdown_quotes_it(session: Session) -> None:
    ThinkingBackend.script = ["Step one.\n\nStep two.", "</think>", "Done."]
    reply = generated(session)
    Message.objects.filter(pk=reply.pk).update(reasoning_ms=2400)
    exported = session_export(session=session)["messages"][1]
    assert (exported["reasoning"], exported["content"], exported["reasoning_ms"]) == (
        "Step one.\n\nStep two.", "Done.", 2400
    )  # fmt: skip
    markdown = export_markdown(session_export(session=session))
    assert "> *Thought for 2 s*\n>\n> Step one.\n>\n> Step two.\n\nDone.\n" in markdown


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_the_live_buffer_keeps_each_part_apart_and_lets_both_expire(kind: str, tmp_path: Path) -> None:
    server = PrivateRedis(tmp_path) if kind == "redis" else None
    buffer: StreamBuffer = MemoryStreamBuffer()
    if server is not None:
        server.start()
        buffer = RedisStreamBuffer(server.url)
    try:
        buffer.append(7, 1, "Hmm", "reasoning")
        buffer.append(7, 2, ", ok", "reasoning")
        buffer.append(7, 3, "Yes")
        buffer.append(7, 4, ".", "content")
        assert buffer.snapshot(7) == LiveText("Yes.", 4, "Hmm, ok")
        if server is not None:  # a worker that dies leaves nothing for ever, the answer's key included
            client = redis.Redis.from_url(server.url)
            assert all(0 < client.ttl(f"chatsite:reply:7:{key}") <= 3600 for key in ("text", "seq", "reasoning"))
        buffer.discard(7)
        assert buffer.snapshot(7) is None
    finally:
        if server is not None:
            server.stop()


@pytest.mark.django_db(transaction=True)
def test_a_lost_delta_across_the_end_of_the_thinking_is_filled_part_by_part(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The reply is written by the test: an embedded worker generating it too would race (and
    # discard the live buffer when it ended).
    monkeypatch.setattr("sessions_app.dispatch.reply_enqueue", lambda **_: None)
    reply = streaming_reply(session)
    buffer = stream_buffer()
    chat_delta = {"type": "chat.delta", "message_id": reply.pk}
    try:
        events = follow(
            session,
            [
                lambda: buffer.append(reply.pk, 1, "Hmm", "reasoning"),
                {**chat_delta, "seq": 1, "text": "Hmm", "part": "reasoning"},
                lambda: buffer.append(reply.pk, 2, ", yes", "reasoning"),  # these two deltas are lost
                lambda: buffer.append(reply.pk, 3, "Yes", "content"),
                lambda: buffer.append(reply.pk, 4, ".", "content"),
                {**chat_delta, "seq": 4, "text": ".", "part": "content"},
            ],
            until=4,
        )
    finally:
        buffer.discard(reply.pk)
    got = [(e["seq"], e["part"], e["text"]) for e in events if e["type"] == "delta"]
    assert got == [(1, "reasoning", "Hmm"), (3, "reasoning", ", yes"), (4, "content", "Yes.")]


@pytest.mark.django_db(transaction=True)
def test_a_lost_done_sends_the_missing_thinking_and_answer_from_the_stored_reply(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sessions_app.dispatch.reply_enqueue", lambda **_: None)  # as above
    reply = streaming_reply(session)

    def finished_without_telling() -> None:
        Message.objects.filter(pk=reply.pk).update(status="complete", reasoning="Hmm, yes", content="Yes.", seq=4)

    events = follow(
        session,
        [{"type": "chat.delta", "message_id": reply.pk, "seq": 1, "text": "Hmm", "part": "reasoning"},
         finished_without_telling],
        reply_id=reply.pk,
    )  # fmt: skip
    assert kinds(events) == ["session", "delta", "delta", "delta", "done"]
    assert [(e["part"], e["text"]) for e in events if e["type"] == "delta"] == [
        ("reasoning", "Hmm"), ("reasoning", ", yes"), ("content", "Yes.")
    ]  # fmt: skip
    assert last(events, "done")["message"]["reasoning"] == "Hmm, yes"
