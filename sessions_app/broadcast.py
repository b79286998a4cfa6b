"""The one place that sends events to a session's group.

Workers (Celery processes, or the embedded thread pool) call these after their database writes
have committed. In the embedded default the channel layer lives in daphne's event loop, so sends
from other threads are handed to that loop instead of running on a private one.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings

from inference.reasoning import CONTENT, Part

log = logging.getLogger(__name__)

_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def loop_register(loop: asyncio.AbstractEventLoop) -> None:
    """Record the event loop that owns the in-memory channel layer (daphne's, or the CLI's)."""
    global _loop
    with _loop_lock:
        _loop = loop


class _Sender:
    """One event loop thread per worker process that sends events in order, without blocking.

    ``async_to_sync`` would build a new event loop, and with it a new Redis connection, for
    every delta; the decode loop would wait for each. Here a delta is handed over in
    microseconds and the loop sends them in order over pooled connections.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.queue: asyncio.Queue[tuple[str, Any, Callable[[], Any] | None]] | None = None
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), name="broadcast", daemon=True)
        self.thread.start()
        ready.wait(10)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.queue = asyncio.Queue()
        ready.set()
        self.loop.run_until_complete(self._drain())

    async def _drain(self) -> None:
        assert self.queue is not None
        layer = get_channel_layer()
        while True:
            group, event, before = await self.queue.get()
            try:
                if before is not None:
                    try:
                        before()  # a blocking Redis write that must come before this send
                    except Exception as exc:
                        log.warning("live buffer write failed: %s: %s", type(exc).__name__, exc)
                if callable(event):
                    event()  # a blocking Redis write that must keep its place among the sends
                elif event is not None:
                    await layer.group_send(group, event)
            except Exception as exc:  # Redis down: the reply goes on, the database keeps the text
                log.warning("broadcast to %s failed: %s: %s", group, type(exc).__name__, exc)
            finally:
                self.queue.task_done()

    def submit(
        self, group: str, event: dict[str, Any] | Callable[[], Any], before: Callable[[], Any] | None = None
    ) -> None:
        assert self.queue is not None
        self.loop.call_soon_threadsafe(self.queue.put_nowait, (group, event, before))

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until everything submitted so far has been sent."""
        assert self.queue is not None
        try:
            asyncio.run_coroutine_threadsafe(self.queue.join(), self.loop).result(timeout)
        except TimeoutError:
            log.warning("broadcast queue not drained within %ss", timeout)


_sender: _Sender | None = None


def _background_sender() -> _Sender:
    global _sender
    with _loop_lock:
        if _sender is None or not _sender.thread.is_alive():
            _sender = _Sender()
        return _sender


def group_send(group: str, event: dict[str, Any]) -> None:
    """Send ``event`` to ``group``; events from one thread arrive in the order they were sent.

    Never raises: an event is a notification, the database is the record, and every door reads
    the database when events stop (``sessions_app.follow``). While Redis is away a send is logged
    and dropped, so that what was being stored (a message, a reply's end) is not undone by it.
    """
    layer = get_channel_layer()
    if layer is None:
        return
    loop = _loop
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    try:
        if loop is not None and loop.is_running() and running is not loop:
            # The layer belongs to daphne's (or the terminal chat's) loop.
            future = asyncio.run_coroutine_threadsafe(layer.group_send(group, event), loop)
            future.result(timeout=10)
            return
        if not settings.EMBEDDED and running is None:
            _background_sender().submit(group, event)
            return
        async_to_sync(layer.group_send)(group, event)
    except Exception as exc:
        log.warning("broadcast to %s failed: %s: %s", group, type(exc).__name__, exc)


def in_order(what: str, call: Callable[[], Any]) -> None:
    """Run ``call`` (a write to the live buffer) in order with this thread's sends: on the
    sender's thread in a worker process, so a reply's decode loop never waits on Redis for it;
    here and now elsewhere. Never raises."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    daphne_loop = _loop is not None and _loop.is_running()
    if not settings.EMBEDDED and running is None and not daphne_loop:  # where group_send uses the sender
        _background_sender().submit(what, call)
        return
    try:
        call()
    except Exception as exc:
        log.warning("%s failed: %s: %s", what, type(exc).__name__, exc)


def flush() -> None:
    """Block until this process's queued events are sent (before a worker process exits)."""
    if _sender is not None:
        _sender.flush()


def session_group(session_id: int) -> str:
    return f"session.{session_id}"


def message_send(session_id: int, message: dict[str, Any]) -> None:
    """A message was created or changed state (not for its streamed text)."""
    group_send(session_group(session_id), {"type": "chat.message", "message": message})


def delta_buffered_send(
    session_id: int,
    message_id: int,
    seq: int,
    text: str,
    append: Callable[[int, int, str, Part], None],
    part: Part = CONTENT,
) -> None:
    """``append`` the text to the live buffer, then send the delta: one hand-over to the sender's
    thread per delta in a worker process (a reply sent token by token makes one per token), so
    the decode loop neither waits on Redis nor wakes the sender twice. ``part`` says whether the
    text extends the answer or a reasoning model's thinking. Never raises."""
    group = session_group(session_id)
    event = {"type": "chat.delta", "message_id": message_id, "seq": seq, "text": text, "part": part}
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    daphne_loop = _loop is not None and _loop.is_running()
    if not settings.EMBEDDED and running is None and not daphne_loop:
        _background_sender().submit(group, event, before=lambda: append(message_id, seq, text, part))
        return
    in_order("live buffer append", lambda: append(message_id, seq, text, part))
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
