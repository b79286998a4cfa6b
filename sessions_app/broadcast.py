"""The one place that sends events to a session's group.

Workers (Celery processes, or the embedded thread pool) call these after their database writes
have committed. In the embedded default the channel layer lives in daphne's event loop, so sends
from other threads are handed to that loop instead of running on a private one.

In a worker process, with Redis, a send is one ``PUBLISH`` on the channel layer's group channel
(``sessions_app.channel_layer``), written from the sending thread on a connection Redis does not
answer (``live.UnansweredSends``): a reply's decode loop writes each delta and its live-buffer
append in one ``send``, waits for nothing and wakes no other thread of its own (issue 25: the
hand-over to a sender thread, the core layer's several commands per event and the round trips
cost the engine its cores). The process's events reach Redis, and the doors, in the order they
were sent. Redis away: a send fails, is logged and dropped, and for the next ``_PAUSE_SECONDS``
the process's sends are skipped, so that a reply does not wait on Redis for each token; the
database is the record and every door reads it when events stop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings

from inference.reasoning import CONTENT, Part
from sessions_app.channel_layer import RedisChannelLayer
from sessions_app.live import RedisStreamBuffer, stream_buffer, unanswered_sends

log = logging.getLogger(__name__)

_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()
_PAUSE_SECONDS = 1.0
_paused_until = 0.0


def loop_register(loop: asyncio.AbstractEventLoop) -> None:
    """Record the event loop that owns the in-memory channel layer (daphne's, or the CLI's)."""
    global _loop
    with _loop_lock:
        _loop = loop


def _publishing() -> RedisChannelLayer | None:
    """The Redis layer when this thread publishes by itself (a worker process's threads), else
    None (daphne, the terminal chat, the embedded default: the layer's own loop sends)."""
    if settings.EMBEDDED or (_loop is not None and _loop.is_running()):
        return None
    try:
        asyncio.get_running_loop()
        return None
    except RuntimeError:
        pass
    layer = get_channel_layer()
    return layer if isinstance(layer, RedisChannelLayer) else None


def _publish(what: str, write: Callable[[], Any]) -> None:
    """Write to Redis unless Redis failed moments ago. Never raises."""
    global _paused_until
    if time.monotonic() < _paused_until:
        return
    try:
        write()
    except Exception as exc:  # Redis away: the reply goes on, the database keeps the text
        _paused_until = time.monotonic() + _PAUSE_SECONDS
        log.warning("%s failed: %s: %s; live sends pause for %.0f s", what, type(exc).__name__, exc, _PAUSE_SECONDS)


def group_send(group: str, event: dict[str, Any]) -> None:
    """Send ``event`` to ``group``; events from one thread arrive in the order they were sent.

    Never raises: an event is a notification, the database is the record, and every door reads
    the database when events stop (``sessions_app.follow``). While Redis is away a send is logged
    and dropped, so that what was being stored (a message, a reply's end) is not undone by it.
    """
    layer = get_channel_layer()
    if layer is None:
        return
    redis_layer = _publishing()
    if redis_layer is not None:
        command = ("PUBLISH", redis_layer.group_channel(group), redis_layer.serialize(event))
        _publish(f"broadcast to {group}", lambda: unanswered_sends().send(command))
        return
    loop = _loop
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    try:
        if loop is not None and loop.is_running() and running is not loop:
            # The layer belongs to daphne's (or the terminal chat's) loop: hand the send over and
            # go on (a request's thread does not wait for the loop before queuing its reply). The
            # loop runs the sends in the order they were handed over.
            future = asyncio.run_coroutine_threadsafe(layer.group_send(group, event), loop)
            future.add_done_callback(partial(_sent, group))
            return
        async_to_sync(layer.group_send)(group, event)
    except Exception as exc:
        log.warning("broadcast to %s failed: %s: %s", group, type(exc).__name__, exc)


def _sent(group: str, future: Future[None]) -> None:
    if not future.cancelled() and (exc := future.exception()) is not None:
        log.warning("broadcast to %s failed: %s: %s", group, type(exc).__name__, exc)


def live_discard(message_id: int) -> None:
    """Drop a finished reply's live buffer, in order with this thread's sends. Never raises."""
    if _publishing() is not None:
        _publish("live buffer discard", lambda: unanswered_sends().send(RedisStreamBuffer.discard_command(message_id)))
        return
    try:
        stream_buffer().discard(message_id)
    except Exception as exc:
        log.warning("live buffer discard failed: %s: %s", type(exc).__name__, exc)


def session_group(session_id: int) -> str:
    return f"session.{session_id}"


def message_send(session_id: int, message: dict[str, Any]) -> None:
    """A message was created or changed state (not for its streamed text)."""
    group_send(session_group(session_id), {"type": "chat.message", "message": message})


def delta_buffered_send(session_id: int, message_id: int, seq: int, text: str, part: Part = CONTENT) -> None:
    """Append the text to the live buffer, then send the delta, in that order (a client joining
    in between finds the text in the buffer). In a worker process with Redis both are one write
    from this thread. ``part`` says whether the text extends the answer or a reasoning
    model's thinking. Never raises."""
    group = session_group(session_id)
    event = {"type": "chat.delta", "message_id": message_id, "seq": seq, "text": text, "part": part}
    redis_layer = _publishing()
    if redis_layer is not None:
        commands = [
            *RedisStreamBuffer.append_commands(message_id, seq, text, part),
            ("PUBLISH", redis_layer.group_channel(group), redis_layer.serialize(event)),
        ]
        _publish("live delta", lambda: unanswered_sends().send(*commands))
        return
    try:
        stream_buffer().append(message_id, seq, text, part)
    except Exception as exc:
        log.warning("live buffer append failed: %s: %s", type(exc).__name__, exc)
    group_send(group, event)


def done_send(session_id: int, message: dict[str, Any]) -> None:
    """A reply ended: complete, cancelled, failed or interrupted. Sent once per reply."""
    group_send(session_group(session_id), {"type": "chat.done", "message": message})


def tool_send(session_id: int, message_id: int, kind: str, call: dict[str, Any]) -> None:
    """A reply's tool call started (``kind`` "tool_call") or ended ("tool_result")."""
    group_send(session_group(session_id), {"type": "chat.tool", "event": kind, "message_id": message_id, "call": call})


def turn_send(session_id: int, turn: dict[str, Any]) -> None:
    """The next agent of a multi-agent chain was queued: who speaks next."""
    group_send(session_group(session_id), {"type": "chat.turn", "turn": turn})


def picked_send(session_id: int, pick: dict[str, Any]) -> None:
    """The user picked the best of a compare's replies (``reply_to``, ``picked``)."""
    group_send(session_group(session_id), {"type": "chat.picked", "pick": pick})


def deleted_send(session_id: int, message_ids: list[int]) -> None:
    """Messages were removed (an edit or a regenerate replaced the end of the conversation)."""
    group_send(session_group(session_id), {"type": "chat.deleted", "message_ids": message_ids})
