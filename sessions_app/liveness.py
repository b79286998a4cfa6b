"""Liveness of replies being generated: a heartbeat that means the worker process is alive.

A reply being generated is held by a *lease* in the process that claimed it. One daemon thread
per process renews every lease it holds in one UPDATE every ``REPLY_HEARTBEAT_SECONDS``, from the
claim to the end, whatever the generating thread is doing: loading a model for minutes, waiting
on a long prefill or a slow upstream. So ``heartbeat_at`` goes stale only when the process is
gone (or cannot reach the database), and the reaper takes only replies whose worker died.

The same renewal notices a reply that was taken away (reaped, deleted by an edit, finished by
someone else): its lease is marked lost, and the generating thread stops at once and sends
nothing more.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field

from django.conf import settings
from django.db import close_old_connections, connection
from django.utils import timezone

from sessions_app.models import Message

log = logging.getLogger(__name__)

_names: dict[int, str] = {}


def worker_name() -> str:
    """This process as ``host:pid:nonce``; the nonce tells apart a restarted process that got
    the same pid (in a container, every start is pid 1)."""
    pid = os.getpid()
    if pid not in _names:
        _names[pid] = f"{socket.gethostname()}:{pid}:{secrets.token_hex(3)}"
    return _names[pid]


def heartbeat_seconds() -> float:
    """How often leases are renewed: often enough that three renewals fit in the stale limit."""
    return float(min(settings.REPLY_HEARTBEAT_SECONDS, max(0.2, settings.REPLY_STALE_SECONDS / 3)))


@dataclass
class Lease:
    """One reply this process is generating. ``lost`` is set when the row is no longer ours."""

    message_id: int
    lost: threading.Event = field(default_factory=threading.Event)


class _Heartbeat:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._leases: dict[int, Lease] = {}
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def hold(self, message_id: int) -> Lease:
        lease = Lease(message_id)
        with self._lock:
            self._leases[message_id] = lease
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="reply-heartbeat", daemon=True)
                self._thread.start()
        return lease

    def release(self, lease: Lease) -> None:
        with self._lock:
            if self._leases.get(lease.message_id) is lease:
                del self._leases[lease.message_id]

    def held(self) -> list[int]:
        with self._lock:
            return list(self._leases)

    def _run(self) -> None:
        last = time.monotonic()
        while True:
            # Short naps, so that a changed period (tests change settings) takes effect soon.
            time.sleep(min(0.5, heartbeat_seconds()))
            with self._lock:
                if not self._leases:  # nothing to keep alive: the next hold() starts a new thread
                    self._thread = None
                    return
            if time.monotonic() - last < heartbeat_seconds():
                continue
            last = time.monotonic()
            try:
                self.renew()
            except Exception as exc:  # the database is away: the leases stay, the reaper decides
                log.warning("reply heartbeat failed: %s: %s", type(exc).__name__, exc)
                # Try again within a second, on a fresh connection: once the database is back the
                # leases are renewed before a reaper can take them for dead.
                last -= max(0.0, heartbeat_seconds() - 1.0)
                try:
                    connection.close()
                except Exception as close_exc:
                    log.debug("closing a broken database connection: %s", close_exc)
            try:
                close_old_connections()
            except Exception as exc:
                log.warning("reply heartbeat: closing the connection failed: %s", exc)

    def renew(self) -> None:
        """Renew every lease held; mark lost those whose row is no longer this process's."""
        with self._lock:
            leases = dict(self._leases)
        if not leases:
            return
        mine = Message.objects.filter(pk__in=list(leases), status=Message.Status.STREAMING, worker=worker_name())
        alive = set(mine.values_list("pk", flat=True))
        if alive:
            Message.objects.filter(pk__in=alive, status=Message.Status.STREAMING, worker=worker_name()).update(
                heartbeat_at=timezone.now()
            )
        for message_id, lease in leases.items():
            if message_id not in alive and not lease.lost.is_set():
                log.warning("reply %s was taken from this worker; it stops", message_id)
                lease.lost.set()


_heartbeats: dict[int, _Heartbeat] = {}
_heartbeats_lock = threading.Lock()


def heartbeat() -> _Heartbeat:
    """This process's heartbeat (a forked pool process gets its own)."""
    pid = os.getpid()
    with _heartbeats_lock:
        if pid not in _heartbeats:
            _heartbeats[pid] = _Heartbeat()
        return _heartbeats[pid]
