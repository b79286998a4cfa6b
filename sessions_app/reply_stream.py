"""A reply's text on its way to the row and the clients: the state of one streaming reply, its text
split into answer and thinking (and an agent's tool call held back), sent as deltas in order,
saved periodically, and finished with one conditional write.

A database outage does not stop a reply: generation goes on, its text goes to the live buffer
(Redis) as always, the periodic saves are skipped while the database is away, and the final write
is retried for ``REPLY_DB_RETRY_SECONDS``. If the database comes back in time the reply is stored
whole and ``complete``; if not, the live buffer keeps every token and the reaper ends the reply
``interrupted`` with all of them once the database is back.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import connection
from django.utils import timezone

from inference.constraints import TOOL_CALL_OPEN
from inference.reasoning import CONTENT, REASONING, Part, ThinkSplitter
from sessions_app import broadcast, trace
from sessions_app.liveness import Lease, worker_name
from sessions_app.models import Message
from sessions_app.selectors import message_payload
from sessions_app.unavailable import DATABASE_ERRORS

log = logging.getLogger(__name__)


class CallCut:
    """Splits a step's answer into the free text before a tool call, passed on as it comes, and
    the call itself, held back from the first character of ``<tool_call>`` (so the markup is never
    shown as the answer) and parsed when the step ends."""

    def __init__(self) -> None:
        self.held = ""
        self.calls: str | None = None

    def feed(self, text: str) -> str:
        if self.calls is not None:
            self.calls += text
            return ""
        text = self.held + text
        start = text.find(TOOL_CALL_OPEN)
        if start >= 0:
            self.held, self.calls = "", text[start:]
            return text[:start].rstrip()
        # Keep back an ending that may be the opening tag's start, and the whitespace before it
        # (the space before a call is not the answer's).
        keep = next((n for n in range(min(len(text), len(TOOL_CALL_OPEN) - 1), 0, -1)
                     if TOOL_CALL_OPEN.startswith(text[-n:])), 0)  # fmt: skip
        sent = text[: len(text) - keep].rstrip()
        self.held = text[len(sent) :]
        return sent

    def finish(self) -> str:
        """What was held back at the end of a step that called nothing."""
        held, self.held = self.held, ""
        return held


@dataclass
class Stream:
    message: Message
    lease: Lease
    text: str = ""
    reasoning: str = ""
    # Text not yet sent, in order, each piece the answer's or the thinking's.
    pending: list[tuple[Part, str]] = field(default_factory=list)
    # Splits a reasoning model's thinking from its answer; None: all text is the answer.
    splitter: ThinkSplitter | None = None
    reasoning_started: float | None = None
    reasoning_ended: float | None = None
    reasoning_chunks: int = 0
    seq: int = 0
    saved_seq: int = 0
    started: float = 0.0
    first_token: float | None = None
    last_flush: float = 0.0
    last_save: float = 0.0
    last_poll: float = 0.0
    last_owned: float = 0.0  # the last forced read of the row before sending text
    stop_seen: bool = False
    db_down_since: float | None = None
    # The agent's tool calls so far (ToolRun.as_json), stored with the row at each save.
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    # Holds back a tool call's text while the model writes it (None: no tools this step).
    cut: CallCut | None = None
    # The answer's text of this step: what the model said before its calls.
    step_text: str = ""
    # A later step's answer starts a new paragraph after the text before the calls.
    paragraph: bool = False
    completion_tokens: int = 0
    step_first_token: float | None = None
    step_tokens: int = 0
    reasons: bool = False  # a splitter ran: the agent's model reasons (reasoning_tokens is counted)
    # Per call, the platform's own time in ms: parsed -> the tool started, its result -> the next
    # generation started (None until it starts).
    overheads: list[list[float | None]] = field(default_factory=list)
    results_at: float | None = None

    @property
    def lost(self) -> bool:
        """The row is no longer ours (reaped, deleted, finished elsewhere): send nothing more."""
        return self.lease.lost.is_set()


def stop_requested(stream: Stream, *, force: bool = False) -> bool:
    """Whether to stop: a stop was asked for, or the reply is no longer ours. Polled between
    tokens, so it reads the database at most every ``REPLY_STOP_POLL_MS``; ``force`` reads
    it now (before text is sent), which also restarts that interval."""
    if stream.stop_seen or stream.lost:
        return True
    now = time.monotonic()
    if force or now - stream.last_poll >= settings.REPLY_STOP_POLL_MS / 1000:
        stream.last_poll = now
        try:
            row = (
                Message.objects.filter(pk=stream.message.pk).values_list("cancel_requested", "status", "worker").first()
            )
        except DATABASE_ERRORS as exc:
            # Nobody can take the reply while the database is away: go on generating.
            _database_lost(stream, exc)
            return False
        _database_back(stream)
        if row is None or row[1] != Message.Status.STREAMING or row[2] != worker_name():
            stream.lease.lost.set()  # deleted (an edit), reaped, or finished elsewhere
        elif row[0]:
            stream.stop_seen = True
    return stream.stop_seen or stream.lost


def take(stream: Stream, text: str, now: float) -> None:
    """Queue the engine's ``text`` for sending, split into thinking and answer when the agent
    reasons (and a tool call held back from the answer); count the thinking's chunks (one token
    each on our engines) and time it."""
    splitter = stream.splitter
    if splitter is None:
        pend(stream, answer_pieces(stream, [(CONTENT, text)]))
        return
    before = splitter.phase
    pieces = splitter.feed(text)
    if REASONING in (before, splitter.phase):
        stream.reasoning_chunks += 1
        if stream.reasoning_started is None:
            stream.reasoning_started = now
        if splitter.phase == CONTENT:
            stream.reasoning_ended = now  # this chunk closed the thinking
    pend(stream, answer_pieces(stream, pieces))


def answer_pieces(stream: Stream, pieces: list[tuple[Part, str]]) -> list[tuple[Part, str]]:
    """The answer's pieces with a tool call's text held back, and a later step's answer as a new
    paragraph after the text the model wrote before its calls."""
    out: list[tuple[Part, str]] = []
    for part, text in pieces:
        if part == CONTENT:
            if stream.cut is not None:
                text = stream.cut.feed(text)
            if stream.paragraph:
                text = text.lstrip()
                if text:
                    text, stream.paragraph = "\n\n" + text, False
            stream.step_text += text
        if text:
            out.append((part, text))
    return out


def pend(stream: Stream, pieces: list[tuple[Part, str]]) -> None:
    for part, text in pieces:
        if stream.pending and stream.pending[-1][0] == part:
            stream.pending[-1] = (part, stream.pending[-1][1] + text)
        else:
            stream.pending.append((part, text))


def live_send(send: Any, *args: Any) -> None:
    """Send a live update; if Redis is down the reply goes on and the database keeps the text."""
    try:
        send(*args)
    except Exception as exc:
        log.warning("live update failed (%s: %s); the reply continues", type(exc).__name__, exc)


def flush(stream: Stream) -> None:
    if not stream.pending:
        return
    # A reply taken from this worker sends nothing more: a primary-key read before sending text,
    # at most every REPLY_BROADCAST_INTERVAL_MS (also when each token is sent), makes sure of it.
    # The first text goes out at once (the row was claimed moments ago); the read follows it.
    if stream.seq > 0:
        now = time.monotonic()
        force = now - stream.last_owned >= settings.REPLY_BROADCAST_INTERVAL_MS / 1000
        if force:
            stream.last_owned = now
        stop_requested(stream, force=force)
    if stream.lost:
        return
    pending, stream.pending = stream.pending, []
    for part, text in pending:  # one delta, with its own seq, per part
        stream.seq += 1
        if part == REASONING:
            stream.reasoning += text
        else:
            stream.text += text
        # Buffer first, then broadcast: a client joining in between finds the text in the buffer.
        # In a worker process both are one write to Redis from this thread, answered by nothing.
        message_id, seq = stream.message.pk, stream.seq
        broadcast.delta_buffered_send(stream.message.session_id, message_id, seq, text, part=part)
        if seq == 1:
            trace.mark(message_id, "sent")


def _database_lost(stream: Stream, exc: BaseException) -> None:
    if stream.db_down_since is None:
        stream.db_down_since = time.monotonic()
        log.warning("reply %s: the database is unavailable (%s); generation goes on", stream.message.pk, exc)
    _connection_drop()


def _database_back(stream: Stream) -> None:
    if stream.db_down_since is not None:
        log.warning(
            "reply %s: the database is back after %.1f s", stream.message.pk, time.monotonic() - stream.db_down_since
        )
        stream.db_down_since = None


def _connection_drop() -> None:
    """Forget this thread's broken connection: the next query opens a fresh one."""
    try:
        connection.close()
    except Exception as exc:
        log.debug("closing a broken database connection: %s", exc)


def save_partial(stream: Stream) -> None:
    flush(stream)
    if stream.lost:
        return
    try:
        saved = Message.objects.filter(
            pk=stream.message.pk, status=Message.Status.STREAMING, worker=worker_name()
        ).update(content=stream.text, reasoning=stream.reasoning, seq=stream.seq, tool_calls=stream.tool_calls)
    except DATABASE_ERRORS as exc:
        _database_lost(stream, exc)  # the text is in memory and in the live buffer; saved next time
        return
    _database_back(stream)
    if not saved:
        stream.lease.lost.set()
    stream.saved_seq = stream.seq


def _write_final(stream: Stream, fields: dict[str, Any]) -> bool | None:
    """The final, conditional write of the reply, retried while the database is away.

    Returns whether it was written (False: the reply is no longer ours), or None when the database
    stayed away for ``REPLY_DB_RETRY_SECONDS``: the live buffer then keeps the text for the reaper.
    """
    deadline = time.monotonic() + settings.REPLY_DB_RETRY_SECONDS
    pause = 0.25
    while True:
        try:
            # Only a reply still ours is finished: the reaper may have declared this worker dead.
            updated = Message.objects.filter(
                pk=stream.message.pk, status=Message.Status.STREAMING, worker=worker_name()
            ).update(**fields)
        except DATABASE_ERRORS as exc:
            _database_lost(stream, exc)
            if time.monotonic() + pause > deadline:
                log.error(
                    "reply %s: the database stayed unavailable for %s s; its %s characters stay in the live "
                    "buffer and the reaper ends it `interrupted` once the database is back",
                    stream.message.pk, settings.REPLY_DB_RETRY_SECONDS, len(stream.text),
                )  # fmt: skip
                return None
            time.sleep(pause)
            pause = min(pause * 2, 2.0)
            continue
        _database_back(stream)
        return bool(updated)


def reply_finish(stream: Stream, status: str, *, error: str = "", usage: Any = None, finish_reason: str = "") -> None:
    if stream.lost:
        broadcast.live_discard(stream.message.pk)
        return
    end = time.monotonic()
    if stream.splitter is not None:
        pend(stream, stream.splitter.finish())  # a held-back tail that began no tag after all
    flush(stream)
    message = stream.message
    for call, (before, after) in zip(stream.tool_calls, stream.overheads, strict=False):
        call["overhead_ms"] = {"start": before, "resume": after}
    fields: dict[str, Any] = {
        "status": status,
        "content": stream.text,
        "reasoning": stream.reasoning,
        "tool_calls": stream.tool_calls,
        "seq": stream.seq,
        "error": error,
        "finished_at": timezone.now(),
        "heartbeat_at": timezone.now(),
    }
    if stream.first_token is not None:
        fields["ttft_ms"] = round((stream.first_token - stream.started) * 1000, 1)
    if stream.reasons or stream.splitter is not None:
        fields["reasoning_tokens"] = stream.reasoning_chunks
    if stream.reasoning and stream.reasoning_started is not None:
        # A thinking never closed lasted until the reply ended.
        fields["reasoning_ms"] = round(((stream.reasoning_ended or end) - stream.reasoning_started) * 1000)
    if finish_reason:
        fields["finish_reason"] = finish_reason
    if usage is not None:
        fields["prompt_tokens"] = usage.prompt_tokens
        fields["completion_tokens"] = usage.completion_tokens
        # After tool calls, the last generation's speed: the time between steps is the tools'.
        first = stream.step_first_token if stream.tool_calls else stream.first_token
        tokens = stream.step_tokens if stream.tool_calls else usage.completion_tokens
        decode_time = end - (first or end)
        if tokens > 1 and decode_time > 0:
            fields["decode_tps"] = round((tokens - 1) / decode_time, 2)
    updated = _write_final(stream, fields)
    if updated is None:
        return  # the live buffer keeps the text until the reaper stores it
    broadcast.live_discard(message.pk)
    if not updated:
        return
    message.refresh_from_db()
    live_send(broadcast.done_send, message.session_id, message_payload(message))
