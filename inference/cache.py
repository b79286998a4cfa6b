"""Loaded models, cached per worker process with a memory bound and an idle keep-alive.

Loading a model takes seconds (minutes on an edge board), so a worker keeps what it loaded.
The cache holds at most ``MODEL_CACHE_MAX_BYTES`` of models, evicting the least recently used
one that no reply is using, and unloads a model left unused for ``MODEL_CACHE_IDLE_SECONDS``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from inference.backends.base import Backend

log = logging.getLogger(__name__)


@dataclass
class _Entry:
    backend: Backend
    size: int
    last_used: float = field(default_factory=time.monotonic)
    users: int = 0


class ModelCache:
    def __init__(self, *, max_bytes: int, idle_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self.idle_seconds = idle_seconds
        self._clock = clock
        self._entries: OrderedDict[tuple[Any, ...], _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._load_locks: dict[tuple[Any, ...], threading.Lock] = {}
        self._sweeper: threading.Thread | None = None
        # The last models unloaded, newest last, each with its reason: "idle" (past the
        # keep-alive), "evicted" (to make room for another) or "cleared".
        self.unloaded: deque[dict[str, Any]] = deque(maxlen=20)

    @contextmanager
    def use(self, key: tuple[Any, ...], factory: Callable[[], Backend]) -> Iterator[Backend]:
        """Yield the loaded backend for ``key``, loading it with ``factory`` on first use."""
        entry = self._acquire(key, factory)
        try:
            yield entry.backend
        finally:
            with self._lock:
                entry.users -= 1
                entry.last_used = self._clock()

    def _acquire(self, key: tuple[Any, ...], factory: Callable[[], Backend]) -> _Entry:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                entry.users += 1
                self._entries.move_to_end(key)
                return entry
            load_lock = self._load_locks.setdefault(key, threading.Lock())
        # One thread loads a given model; the others wait for it instead of loading it twice.
        with load_lock:
            with self._lock:
                entry = self._entries.get(key)
                if entry is not None:
                    entry.users += 1
                    self._entries.move_to_end(key)
                    return entry
            backend = factory()
            # Make room before loading, so two models never overlap past the bound.
            size = backend.memory_bytes()
            with self._lock:
                self._make_room(size)
            backend.load()
            with self._lock:
                entry = _Entry(backend=backend, size=size, last_used=self._clock(), users=1)
                self._entries[key] = entry
            self._start_sweeper()
            log.info("loaded %s (%s bytes)", key[:2], size)
            return entry

    def _make_room(self, incoming: int) -> None:
        """Evict idle models, least recently used first, until ``incoming`` fits. Holds _lock."""
        total = sum(e.size for e in self._entries.values())
        for key in list(self._entries):
            if total + incoming <= self.max_bytes:
                break
            entry = self._entries[key]
            if entry.users:
                continue
            total -= entry.size
            self._close(key, reason="evicted")

    def _close(self, key: tuple[Any, ...], *, reason: str) -> None:
        self._close_entry(key, self._entries.pop(key), reason=reason)

    def _close_entry(self, key: tuple[Any, ...], entry: _Entry, *, reason: str) -> None:
        try:
            entry.backend.close()
        except Exception:  # a failing close must not keep the memory accounted
            log.exception("closing %s failed", key[:2])
        log.info("unloaded %s", key[:2])
        self.unloaded.append({**_describe(key), "bytes": entry.size, "unloaded_at": time.time(), "reason": reason})

    def sweep(self) -> int:
        """Unload models idle past the keep-alive; returns how many were unloaded.

        Entries leave the cache under the lock but are closed after it: stopping an engine can
        take seconds, and the replies of other models must not wait for it.
        """
        now = self._clock()
        with self._lock:
            idle = [k for k, e in self._entries.items() if not e.users and now - e.last_used >= self.idle_seconds]
            gone = [(key, self._entries.pop(key)) for key in idle]
        for key, entry in gone:
            self._close_entry(key, entry, reason="idle")
        return len(gone)

    def clear(self) -> None:
        with self._lock:
            for key in list(self._entries):
                self._close(key, reason="cleared")

    def loaded(self) -> list[tuple[Any, ...]]:
        with self._lock:
            return list(self._entries)

    def stats(self) -> dict[str, Any]:
        """What a worker reports: each loaded model (backend, model, bytes, idle seconds, in use),
        the keep-alive, and the models unloaded lately."""
        now = self._clock()
        with self._lock:
            loaded = [{**_describe(key), "bytes": e.size, "idle_seconds": round(now - e.last_used, 1),
                       "in_use": e.users} for key, e in self._entries.items()]  # fmt: skip
            return {"loaded": loaded, "keep_alive_seconds": self.idle_seconds, "unloaded": list(self.unloaded)}

    def _start_sweeper(self) -> None:
        with self._lock:
            if self._sweeper is not None:
                return
            self._sweeper = threading.Thread(target=self._sweep_forever, name="model-cache-sweeper", daemon=True)
            self._sweeper.start()

    def _sweep_forever(self) -> None:
        interval = max(1.0, min(30.0, self.idle_seconds / 4))
        while True:
            time.sleep(interval)
            self.sweep()


def _describe(key: tuple[Any, ...]) -> dict[str, Any]:
    """A cache key (backend name, model path or URL, ...) as labels."""
    return {"backend": str(key[0]) if key else "", "model": str(key[1]) if len(key) > 1 else ""}


_cache: ModelCache | None = None
_cache_lock = threading.Lock()


def model_cache_stats() -> dict[str, Any] | None:
    """This process's cache stats, or None when nothing was ever loaded here."""
    return _cache.stats() if _cache is not None else None


def model_cache() -> ModelCache:
    """This process's cache, built from settings on first use."""
    global _cache
    from django.conf import settings

    with _cache_lock:
        if _cache is None:
            _cache = ModelCache(
                max_bytes=settings.MODEL_CACHE_MAX_BYTES, idle_seconds=settings.MODEL_CACHE_IDLE_SECONDS
            )
        return _cache
