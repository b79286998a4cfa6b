"""Claiming a row of work once, and holding it with a lease renewed by one heartbeat per process.

A row of work (a reply, a supervisor's pick, a job) goes ``queued -> running`` by a conditional
update (``claim``): of two deliveries of the same task, one claims it and the other finds nothing.
From the claim to the end, the process *holds* it: one daemon thread per process renews
``heartbeat_at`` of every row it holds, one UPDATE per table, whatever the working threads are
doing (loading a model for minutes, a long prefill, a step in a child process). So a heartbeat
goes stale only when the process is gone (or cannot reach the database), and the reaper takes
only rows whose worker died.

The same renewal notices a row that was taken away (reaped, deleted, finished by someone else):
its lease is marked ``lost``, and the working thread stops and writes nothing more.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db import close_old_connections, connection, models
from django.utils import timezone

from inference.runtime.identity import worker_name

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Leased:
    """A table whose rows a worker claims and holds: which status means held, and how often the
    heartbeat renews them (``period``, read at each round: tests change the settings)."""

    name: str  # in logs: "reply", "job"
    model: type[models.Model]
    running: str
    period: Callable[[], float]
    status_field: str = "status"
    worker_field: str = "worker"
    heartbeat_field: str = "heartbeat_at"

    def held_by(self, worker: str, pks: Iterable[int]) -> models.QuerySet[Any]:
        """The rows among ``pks`` that ``worker`` still holds."""
        return self.model._default_manager.filter(
            pk__in=list(pks), **{self.status_field: self.running, self.worker_field: worker}
        )


def claim(table: Leased, pk: int, *, queued: str, worker: str | None = None, **values: Any) -> bool:
    """Take row ``pk`` from ``queued`` to running for ``worker`` (this process by default), its
    heartbeat starting now, with ``values`` written in the same update. True only for the one
    call that moved it: a second delivery, or a row already ended or cancelled, returns False."""
    updated = table.model._default_manager.filter(pk=pk, **{table.status_field: queued}).update(
        **{table.status_field: table.running, table.worker_field: worker or worker_name(),
           table.heartbeat_field: timezone.now()},
        **values,
    )  # fmt: skip
    return bool(updated)


@dataclass(eq=False)
class Lease:
    """One row this process holds. ``lost`` is set when the row is no longer ours."""

    table: Leased
    pk: int
    worker: str
    lost: threading.Event = field(default_factory=threading.Event)


class Heartbeat:
    """This process's leases and the one thread that renews them; the thread runs only while a
    lease is held (an idle process polls nothing)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._leases: dict[tuple[Leased, int], Lease] = {}
        self._thread: threading.Thread | None = None

    def hold(self, table: Leased, pk: int, *, worker: str | None = None) -> Lease:
        """Keep row ``pk`` of ``table`` alive until ``release``; ``worker`` is the name it was
        claimed with (this process's by default)."""
        lease = Lease(table, pk, worker or worker_name())
        with self._lock:
            self._leases[(table, pk)] = lease
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="lease-heartbeat", daemon=True)
                self._thread.start()
        return lease

    def release(self, lease: Lease) -> None:
        with self._lock:
            if self._leases.get((lease.table, lease.pk)) is lease:
                del self._leases[(lease.table, lease.pk)]

    def held(self) -> list[Lease]:
        with self._lock:
            return list(self._leases.values())

    def _run(self) -> None:
        last: dict[Leased, float] = {}
        while True:
            with self._lock:
                tables = {lease.table for lease in self._leases.values()}
            # Short naps, so that a changed period (tests change settings) takes effect soon.
            time.sleep(min([0.5, *(table.period() for table in tables)]))
            with self._lock:
                if not self._leases:  # nothing to keep alive: the next hold() starts a new thread
                    self._thread = None
                    return
                tables = {lease.table for lease in self._leases.values()}
            now = time.monotonic()
            for table in tables:
                period = table.period()
                if now - last.setdefault(table, now) < period:
                    continue
                last[table] = now
                try:
                    self.renew(table)
                except Exception as exc:  # the database is away: the leases stay, the reaper decides
                    log.warning("%s heartbeat failed: %s: %s", table.name, type(exc).__name__, exc)
                    # Try again within a second, on a fresh connection: once the database is back
                    # the leases are renewed before a reaper can take them for dead.
                    last[table] -= max(0.0, period - 1.0)
                    try:
                        connection.close()
                    except Exception as close_exc:
                        log.debug("closing a broken database connection: %s", close_exc)
            try:
                close_old_connections()
            except Exception as exc:
                log.warning("heartbeat: closing the connection failed: %s", exc)

    def renew(self, table: Leased | None = None) -> None:
        """Renew every lease held (of ``table``); mark lost those whose row is no longer ours."""
        groups: dict[tuple[Leased, str], dict[int, Lease]] = {}
        for lease in self.held():
            if table is None or lease.table is table:
                groups.setdefault((lease.table, lease.worker), {})[lease.pk] = lease
        for (leased, worker), leases in groups.items():
            alive = set(leased.held_by(worker, leases).values_list("pk", flat=True))
            if alive:
                leased.held_by(worker, alive).update(**{leased.heartbeat_field: timezone.now()})
            for pk, lease in leases.items():
                if pk not in alive and not lease.lost.is_set():
                    log.warning("%s %s was taken from this worker; it stops", leased.name, pk)
                    lease.lost.set()


_heartbeats: dict[int, Heartbeat] = {}
_heartbeats_lock = threading.Lock()


def heartbeat() -> Heartbeat:
    """This process's heartbeat (a forked pool process gets its own)."""
    pid = os.getpid()
    with _heartbeats_lock:
        if pid not in _heartbeats:
            _heartbeats[pid] = Heartbeat()
        return _heartbeats[pid]
