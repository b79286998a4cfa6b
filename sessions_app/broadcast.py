"""The one place that sends events to a session's group.

Workers (Celery processes, or the embedded thread pool) call these after their database writes
have committed. In the embedded default the channel layer lives in daphne's event loop, so sends
from other threads are handed to that loop instead of running on a private one.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

log = logging.getLogger(__name__)

_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def loop_register(loop: asyncio.AbstractEventLoop) -> None:
    """Record the event loop that owns the in-memory channel layer (daphne's, or the CLI's)."""
    global _loop
    with _loop_lock:
        _loop = loop


def group_send(group: str, event: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    loop = _loop
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if loop is not None and loop.is_running() and running is not loop:
        future = asyncio.run_coroutine_threadsafe(layer.group_send(group, event), loop)
        future.result(timeout=10)
        return
    async_to_sync(layer.group_send)(group, event)


def session_group(session_id: int) -> str:
    return f"session.{session_id}"


def message_send(session_id: int, message: dict[str, Any]) -> None:
    """A message was created or changed state (not for its streamed text)."""
    group_send(session_group(session_id), {"type": "chat.message", "message": message})


def delta_send(session_id: int, message_id: int, seq: int, text: str) -> None:
    group_send(
        session_group(session_id),
        {"type": "chat.delta", "message_id": message_id, "seq": seq, "text": text},
    )


def done_send(session_id: int, message: dict[str, Any]) -> None:
    """A reply ended: complete, cancelled, failed or interrupted. Sent once per reply."""
    group_send(session_group(session_id), {"type": "chat.done", "message": message})
