"""The text of replies being streamed right now, for clients that join mid-reply.

The database has a reply's partial text as of its last save (every ``REPLY_SAVE_INTERVAL_MS``);
this buffer has it as of the last delta, with that delta's ``seq``. The worker writes here
before it broadcasts a delta, and a client joins the session's group before it reads here, so
a joining client misses nothing: deltas up to the snapshot's ``seq`` are in the snapshot, later
ones arrive live. The buffer is a cache: the database stays the record (the reaper falls back
to it when the buffer is gone).

A reasoning model's reply has two parts (``inference.reasoning``): each delta extends one of
them, and the buffer keeps each part's text apart, so that a client joining mid-reply gets the
thinking and the answer as they are.
"""

from __future__ import annotations

import logging
import os
import select
import threading
from typing import Any, NamedTuple, Protocol

import redis
from django.conf import settings

from inference.reasoning import CONTENT, REASONING, Part

_TTL_SECONDS = 3600


# A reply's ``params["cadence"]``: "token" sends each token as the engine makes it (what an API
# client measuring inter-token latency expects); otherwise text goes out in batches every
# REPLY_BROADCAST_INTERVAL_MS (at most ~20 events a second, what a browser needs).
CADENCE_TOKEN = "token"


class LiveText(NamedTuple):
    """A streaming reply's text as of delta ``seq``: its answer and its thinking."""

    content: str
    seq: int
    reasoning: str = ""


class StreamBuffer(Protocol):
    def append(self, message_id: int, seq: int, text: str, part: Part = CONTENT) -> None: ...
    def snapshot(self, message_id: int) -> LiveText | None: ...
    def discard(self, message_id: int) -> None: ...


class MemoryStreamBuffer:
    """For the embedded default: the worker threads and the consumers share one process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._data: dict[int, LiveText] = {}

    def append(self, message_id: int, seq: int, text: str, part: Part = CONTENT) -> None:
        with self._lock:
            old = self._data.get(message_id, LiveText("", 0))
            if part == REASONING:
                self._data[message_id] = LiveText(old.content, seq, old.reasoning + text)
            else:
                self._data[message_id] = LiveText(old.content + text, seq, old.reasoning)

    def snapshot(self, message_id: int) -> LiveText | None:
        with self._lock:
            return self._data.get(message_id)

    def discard(self, message_id: int) -> None:
        with self._lock:
            self._data.pop(message_id, None)


class RedisStreamBuffer:
    def __init__(self, url: str | None = None) -> None:
        """On ``url``'s own client, or this process's shared one."""
        self._redis = redis_client() if url is None else _client_for(url)

    @staticmethod
    def _keys(message_id: int) -> tuple[str, str, str]:
        prefix = f"chatsite:reply:{message_id}"
        return f"{prefix}:text", f"{prefix}:seq", f"{prefix}:reasoning"

    @classmethod
    def append_commands(cls, message_id: int, seq: int, text: str, part: Part = CONTENT) -> list[Command]:
        """The commands of an append: the text, then the ``seq`` it has reached."""
        text_key, seq_key, reasoning_key = cls._keys(message_id)
        key = reasoning_key if part == REASONING else text_key
        # The expiry on every append: a part's key may be new (the answer starts after the
        # thinking), and a buffer nobody discards (a worker that died) must still go.
        return [
            ("APPEND", key, text.encode("utf-8")),
            ("SET", seq_key, seq, "EX", _TTL_SECONDS),
            ("EXPIRE", key, _TTL_SECONDS),
        ]

    @classmethod
    def discard_command(cls, message_id: int) -> Command:
        return ("DEL", *cls._keys(message_id))

    def append(self, message_id: int, seq: int, text: str, part: Part = CONTENT) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for command in self.append_commands(message_id, seq, text, part):
            pipe.execute_command(*command)
        pipe.execute()

    def snapshot(self, message_id: int) -> LiveText | None:
        text_key, seq_key, reasoning_key = self._keys(message_id)
        text, seq, reasoning = self._redis.mget(text_key, seq_key, reasoning_key)
        if seq is None:
            return None
        return LiveText(_decoded(text), int(seq), _decoded(reasoning))

    def discard(self, message_id: int) -> None:
        self._redis.execute_command(*self.discard_command(message_id))


Command = tuple[str | bytes | int, ...]


class UnansweredSends:
    """One connection on which Redis sends no replies (``CLIENT REPLY OFF``): a write is one
    ``send``, and nobody waits for Redis or is woken by its answer. A worker process's live-buffer
    writes and channel-layer publishes all go here, from any of its threads, so Redis runs them
    in the order they were made. What is lost when the connection breaks is lost (raised to the
    caller, who logs it): the database is the record."""

    def __init__(self, url: str) -> None:
        self._pool = redis.ConnectionPool.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._connection: Any = None
        self._lock = threading.Lock()

    def send(self, *commands: Command) -> None:
        with self._lock:
            connection = self._connection
            if connection is not None and _closed(connection):
                # Redis never writes here: anything to read is its end (a restart). Without this
                # check the first write after a restart would vanish into the dead socket.
                connection.disconnect()
                connection = self._connection = None
            if connection is None:
                connection = self._pool.make_connection()
                connection.connect()
                connection.send_command("CLIENT", "REPLY", "OFF")
                self._connection = connection
            try:
                connection.send_packed_command(connection.pack_commands(commands), check_health=False)
            except Exception:
                self._connection = None
                connection.disconnect()
                raise


def _decoded(raw: bytes | str | None) -> str:
    raw = raw or b""
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw


_buffer: StreamBuffer | None = None
_client: redis.Redis | None = None
_sends: UnansweredSends | None = None
_lock = threading.Lock()


def redis_client() -> redis.Redis:
    """This process's synchronous Redis client for the live buffer and a worker's sends: short
    timeouts (a reply must not wait long on Redis), a pool shared by the threads."""
    global _client
    with _lock:
        if _client is None:
            _client = _client_for(str(settings.REDIS_URL))
        return _client


def _closed(connection: Any) -> bool:
    sock = getattr(connection, "_sock", None)
    return sock is None or bool(select.select([sock], [], [], 0)[0])


def unanswered_sends() -> UnansweredSends:
    """This process's connection for writes nobody waits on (a worker's sends)."""
    global _sends
    if _sends is None:
        with _lock:
            _sends = _sends or UnansweredSends(str(settings.REDIS_URL))
    return _sends


def _forget_after_fork() -> None:
    """A forked child (a prefork pool process) makes its own connection: two processes writing
    commands on one socket would interleave them. Not under ``_lock``: another thread of the
    parent may have held it at the fork."""
    global _sends, _lock
    _sends, _lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)


def _client_for(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


def stream_buffer() -> StreamBuffer:
    global _buffer
    if _buffer is None:
        buffer: StreamBuffer = MemoryStreamBuffer() if settings.EMBEDDED else RedisStreamBuffer()
        with _lock:
            _buffer = _buffer or buffer
    return _buffer


def live_fresher(*, message_id: int, content: str, seq: int, reasoning: str = "") -> LiveText:
    """A streaming reply's text, thinking and ``seq``: the live buffer's when it is at least as new
    as the database's copy, else the database's. The buffer is a cache: when Redis is away the
    database's copy is the best there is."""
    stored = LiveText(content, seq, reasoning)
    try:
        live = stream_buffer().snapshot(message_id)
    except Exception as exc:
        logging.getLogger(__name__).warning("live buffer unavailable for %s: %s", message_id, exc)
        return stored
    if live is not None and live.seq >= seq:
        return live
    return stored
