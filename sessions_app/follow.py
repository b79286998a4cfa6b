"""The one reply follower: what every door (websocket, SSE, ``/v1``, terminal) shows of a session.

A door joins the session's channel-layer group, then iterates ``session_follow``. It yields:

1. the persisted state, with each streaming reply's text taken from the live buffer when that is
   fresher (``{"type": "session", "session", "messages"}``);
2. then the live events, each reply's deltas once and in order (de-duplicated by ``seq``; a gap
   is filled from the live buffer), each saying which part it extends (``part``: ``content``, or
   ``reasoning`` for a reasoning model's thinking), ``message`` and ``deleted`` events, an agent's
   ``tool_call`` (a call started) and ``tool_result`` (it ended) events, and exactly one ``done``
   per reply, after which nothing more of that reply is passed on;
3. whenever events stop for ``REPLY_FOLLOW_CHECK_SECONDS`` while a reply is unfinished, the
   database is read: a reply that ended without its ``done`` reaching us (Redis pub/sub keeps
   nothing for a reader that is away; Redis may restart) is ended from the stored state, its
   missing text first. An ``idle`` event with the replies' states tells a door that time passed.

Followed with ``reply_id``, it yields only that reply's events and ends after its ``done`` (or
``deleted``). The door guarantees it joined the group before iterating: events that arrive
between joining and the snapshot are then de-duplicated, not lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings

from inference.reasoning import CONTENT, REASONING, Part
from sessions_app.live import LiveText, live_fresher
from sessions_app.models import Message, Session
from sessions_app.selectors import message_list, message_payload_live, message_states, session_payload

log = logging.getLogger(__name__)

Receive = Callable[[], Awaitable[dict[str, Any]]]
Event = dict[str, Any]
UNFINISHED = (Message.Status.QUEUED, Message.Status.STREAMING)


def done_event(message: dict[str, Any]) -> Event:
    """The ``done`` event of a reply, from its message payload."""
    return {
        "type": "done",
        "message_id": message["id"],
        "status": message["status"],
        "error": message["error"],
        "stats": message["stats"],
        "message": message,
    }


@dataclass
class _Has:
    """What the client has of one unfinished reply."""

    seq: int = 0
    text: str = ""
    reasoning: str = ""

    def behind(self, live: LiveText) -> bool:
        """Whether ``live`` is this state and more: what is missing can be sent as deltas."""
        return live.content.startswith(self.text) and live.reasoning.startswith(self.reasoning)


@dataclass
class _Follower:
    session_id: int
    reply_id: int | None
    replies: dict[int, _Has] = field(default_factory=dict)
    finished: set[int] = field(default_factory=set)
    ended: bool = False

    def _wanted(self, message_id: int) -> bool:
        return self.reply_id is None or message_id == self.reply_id

    def track(self, message: dict[str, Any]) -> None:
        if message["status"] in UNFINISHED and message["id"] not in self.finished:
            self.replies.setdefault(
                message["id"], _Has(message["seq"], message["content"], message.get("reasoning", ""))
            )

    async def handle(self, event: Event) -> list[Event]:
        kind = event.get("type")
        if kind == "chat.message":
            message = event["message"]
            if not self._wanted(message["id"]) or message["id"] in self.finished:
                return []
            self.track(message)
            return [{"type": "message", "message": message}]
        if kind == "chat.delta":
            # No ``part``: a worker of an older version, whose text is all answer.
            return await self._delta(event["message_id"], event["seq"], event["text"], event.get("part", CONTENT))
        if kind == "chat.done":
            return self._done(event["message"])
        if kind == "chat.deleted":
            return self._deleted(list(event["message_ids"]))
        if kind == "chat.tool":
            message_id = event["message_id"]
            if not self._wanted(message_id) or message_id in self.finished:
                return []
            return [{"type": event["event"], "message_id": message_id, "call": event["call"]}]
        if kind == "chat.turn" and self.reply_id is None:
            return [{"type": "turn", **event["turn"]}]
        if kind == "chat.picked" and self.reply_id is None:
            return [{"type": "picked", **event["pick"]}]
        return []

    async def _delta(self, message_id: int, seq: int, text: str, part: Part) -> list[Event]:
        if not self._wanted(message_id) or message_id in self.finished:
            return []  # nothing of a reply after its done
        has = self.replies.setdefault(message_id, _Has())
        if seq <= has.seq:
            return []  # already in the snapshot or sent
        if seq > has.seq + 1:
            # A delta was lost on the way: the live buffer has the whole text up to some seq.
            live = await sync_to_async(live_fresher)(message_id=message_id, content="", seq=0)
            if live.seq >= seq and has.behind(live):
                return _catch_up(message_id, has, live)
        return [_advance(message_id, has, seq, text, part)]

    def _done(self, message: dict[str, Any]) -> list[Event]:
        message_id = message["id"]
        if not self._wanted(message_id) or message_id in self.finished:
            return []
        out: list[Event] = []
        has = self.replies.pop(message_id, None)
        stored = LiveText(message.get("content") or "", message["seq"], message.get("reasoning") or "")
        grown = has is not None and (len(stored.content), len(stored.reasoning)) != (len(has.text), len(has.reasoning))
        if has is not None and grown and has.behind(stored):
            out += _catch_up(message_id, has, stored)  # deltas that never arrived: the stored text has them
        out.append(done_event(message))
        self.finished.add(message_id)
        if self.reply_id is not None:
            self.ended = True
        return out

    def _deleted(self, message_ids: list[int]) -> list[Event]:
        for message_id in message_ids:
            self.replies.pop(message_id, None)
            self.finished.add(message_id)
        if self.reply_id is None:
            return [{"type": "deleted", "message_ids": message_ids}]
        if self.reply_id in message_ids:
            self.ended = True
            return [{"type": "deleted", "message_ids": message_ids}]
        return []

    async def check(self) -> list[Event]:
        """Events stopped: read the unfinished replies' state from the database."""
        if not self.replies:
            return [{"type": "idle", "states": {}}]
        states = await sync_to_async(message_states)(session_id=self.session_id, message_ids=list(self.replies))
        out: list[Event] = []
        gone = [message_id for message_id in self.replies if message_id not in states]
        if gone:
            out += self._deleted(gone)
        for message_id, state in states.items():
            has = self.replies.get(message_id)
            if has is None:
                continue
            live = LiveText(state["content"], state["seq"], state["reasoning"])
            if state["status"] not in UNFINISHED:
                out += self._done(state)
            elif live.seq > has.seq and has.behind(live):
                out += _catch_up(message_id, has, live)
        out.append({"type": "idle", "states": {pk: state["status"] for pk, state in states.items()}})
        return out


def _advance(message_id: int, has: _Has, seq: int, text: str, part: Part) -> Event:
    has.seq = seq
    if part == REASONING:
        has.reasoning += text
    else:
        has.text += text
    return {"type": "delta", "message_id": message_id, "seq": seq, "text": text, "part": part}


def _catch_up(message_id: int, has: _Has, live: LiveText) -> list[Event]:
    """The deltas that bring ``has`` to ``live`` (which ``has.behind``): the thinking's, then the
    answer's. Both grew only when the gap spans the end of the thinking, so at least two deltas
    were missed (the worker sends each part with its own ``seq``): the thinking's gets the
    ``seq`` before ``live.seq``."""
    more_reasoning, more_text = live.reasoning[len(has.reasoning) :], live.content[len(has.text) :]
    out: list[Event] = []
    if more_reasoning:
        seq = live.seq - 1 if more_text and live.seq - 1 > has.seq else live.seq
        out.append(_advance(message_id, has, seq, more_reasoning, REASONING))
    if more_text or not out:
        out.append(_advance(message_id, has, live.seq, more_text, CONTENT))
    return out


def _snapshot(session: Session, reply_id: int | None) -> Event:
    session.refresh_from_db()
    messages = message_list(session=session)
    if reply_id is not None:
        messages = messages.filter(pk=reply_id)
    return {
        "type": "session",
        "session": session_payload(session),
        "messages": [message_payload_live(message) for message in messages],
    }


async def session_follow(
    *, session: Session, receive: Receive, reply_id: int | None = None, check_seconds: float | None = None
) -> AsyncGenerator[Event, None]:
    """Follow ``session`` (or one reply of it) as described above. ``receive`` returns the next
    channel-layer event of the session's group."""
    check = check_seconds if check_seconds is not None else settings.REPLY_FOLLOW_CHECK_SECONDS
    follower = _Follower(session_id=session.pk, reply_id=reply_id)
    snapshot = await sync_to_async(_snapshot)(session, reply_id)
    for message in snapshot["messages"]:
        follower.track(message)
    yield snapshot
    if reply_id is not None:
        if not snapshot["messages"]:
            yield {"type": "deleted", "message_ids": [reply_id]}
            return
        if snapshot["messages"][0]["status"] not in UNFINISHED:
            yield done_event(snapshot["messages"][0])
            return
    # One receive stays pending across the checks: cancelling it would make a pub/sub layer drop
    # the channel (and what arrives for it) until the next receive.
    pending: asyncio.Future[dict[str, Any]] | None = None
    try:
        while not follower.ended:
            if pending is None:
                pending = asyncio.ensure_future(receive())
            done, _ = await asyncio.wait({pending}, timeout=check)
            if not done:
                out = await follower.check()
            else:
                task, pending = pending, None
                try:
                    event = task.result()
                except Exception as exc:  # the channel layer is away (Redis restarting): keep to the database
                    log.warning("channel layer receive failed: %s: %s", type(exc).__name__, exc)
                    await asyncio.sleep(min(check, 1.0))
                    out = await follower.check()
                else:
                    out = await follower.handle(event)
            for item in out:
                yield item
    finally:
        if pending is not None:
            pending.cancel()
