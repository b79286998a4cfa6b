"""The text of replies being streamed right now, for clients that join mid-reply.

The database has a reply's partial text as of its last save (every ``REPLY_SAVE_INTERVAL_MS``);
this buffer has it as of the last delta, with that delta's ``seq``. The worker writes here
before it broadcasts a delta, and a client joins the session's group before it reads here, so
a joining client misses nothing: deltas up to the snapshot's ``seq`` are in the snapshot, later
ones arrive live. The buffer is a cache: the database stays the record (the reaper falls back
to it when the buffer is gone).
"""

from __future__ import annotations

import logging
import threading
from typing import Protocol

from django.conf import settings

_TTL_SECONDS = 3600
_TTL_EVERY = 64


# A reply's ``params["cadence"]``: "token" sends each token as the engine makes it (what an API
# client measuring inter-token latency expects); otherwise text goes out in batches every
# REPLY_BROADCAST_INTERVAL_MS (at most ~20 events a second, what a browser needs).
CADENCE_TOKEN = "token"


class StreamBuffer(Protocol):
    def append(self, message_id: int, seq: int, text: str) -> None: ...
    def snapshot(self, message_id: int) -> tuple[str, int] | None: ...
    def discard(self, message_id: int) -> None: ...


class MemoryStreamBuffer:
    """For the embedded default: the worker threads and the consumers share one process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._data: dict[int, tuple[str, int]] = {}

    def append(self, message_id: int, seq: int, text: str) -> None:
        with self._lock:
            old, _ = self._data.get(message_id, ("", 0))
            self._data[message_id] = (old + text, seq)

    def snapshot(self, message_id: int) -> tuple[str, int] | None:
        with self._lock:
            return self._data.get(message_id)

    def discard(self, message_id: int) -> None:
        with self._lock:
            self._data.pop(message_id, None)


class RedisStreamBuffer:
    def __init__(self, url: str) -> None:
        import redis

        self._redis = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)

    @staticmethod
    def _keys(message_id: int) -> tuple[str, str]:
        return f"chatsite:reply:{message_id}:text", f"chatsite:reply:{message_id}:seq"

    def append(self, message_id: int, seq: int, text: str) -> None:
        text_key, seq_key = self._keys(message_id)
        pipe = self._redis.pipeline(transaction=True)
        pipe.append(text_key, text.encode("utf-8"))
        pipe.set(seq_key, seq, ex=_TTL_SECONDS)
        if seq % _TTL_EVERY == 1:  # a reply sent token by token appends often; the TTL is an hour
            pipe.expire(text_key, _TTL_SECONDS)
        pipe.execute()

    def snapshot(self, message_id: int) -> tuple[str, int] | None:
        text_key, seq_key = self._keys(message_id)
        text, seq = self._redis.mget(text_key, seq_key)
        if seq is None:
            return None
        raw = text or b""
        return (raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw), int(seq)

    def discard(self, message_id: int) -> None:
        self._redis.delete(*self._keys(message_id))


_buffer: StreamBuffer | None = None
_lock = threading.Lock()


def stream_buffer() -> StreamBuffer:
    global _buffer
    with _lock:
        if _buffer is None:
            _buffer = MemoryStreamBuffer() if settings.EMBEDDED else RedisStreamBuffer(str(settings.REDIS_URL))
        return _buffer


def text_fresher(*, message_id: int, content: str, seq: int) -> tuple[str, int]:
    """A streaming reply's text and ``seq``: the live buffer's when it is at least as new as the
    database's copy, else the database's. The buffer is a cache: when Redis is away the database's
    copy is the best there is."""
    try:
        live = stream_buffer().snapshot(message_id)
    except Exception as exc:
        logging.getLogger(__name__).warning("live buffer unavailable for %s: %s", message_id, exc)
        return content, seq
    if live is not None and live[1] >= seq:
        return live
    return content, seq
