"""Sending a task to where it runs: by name to Celery, or to a lane of the embedded default.

A task is named by its dotted path (``sessions_app.tasks.reply_generate``): the Celery task of
that name when there is a broker (``send_task``: the caller imports no task module), the same
task object called in this process when there is none (``settings.EMBEDDED``). The embedded
default's worker is a ``Lane``: a pool of threads, and a housekeeping thread beside it that first
recovers what a previous process left (``recover``), then reaps every ``every()`` seconds, since
no Celery beat runs there.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import close_old_connections
from django.utils.module_loading import import_string

from inference.workers import worker_task

log = logging.getLogger(__name__)


class Lane:
    """Threads of the embedded default that run some tasks, with their housekeeping."""

    def __init__(
        self,
        name: str,
        *,
        threads: Callable[[], int],
        every: Callable[[], float],
        reap: Callable[[], object],
        recover: Callable[[Lane], object] | None = None,
    ) -> None:
        self.name = name
        self._threads, self._every, self._reap, self._recover = threads, every, reap, recover
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._housekeeper: threading.Thread | None = None
        self._stopping = threading.Event()

    @property
    def running(self) -> bool:
        return self._pool is not None

    def start(self) -> ThreadPoolExecutor:
        """The lane's pool, started with its housekeeping on first use."""
        with self._lock:
            if self._pool is None:
                self._stopping = threading.Event()
                self._pool = ThreadPoolExecutor(max_workers=self._threads(), thread_name_prefix=self.name)
                self._housekeeper = threading.Thread(
                    target=self._housekeep, args=(self._stopping,), name=f"{self.name}-reaper", daemon=True
                )
                self._housekeeper.start()
                _lanes.add(self)
            return self._pool

    def submit(self, fn: Callable[..., object], *args: Any) -> Future[object]:
        """Run ``fn(*args)`` in one of the lane's threads (as an executor does; ``recover``
        callbacks may be handed any executor)."""
        return self.start().submit(fn, *args)

    def stop(self, timeout: float = 10.0) -> None:
        """End the pool and its housekeeping, waiting up to ``timeout`` seconds for each thread
        (a process that is done with them: the tests, before their database is emptied)."""
        with self._lock:
            pool, self._pool = self._pool, None
            housekeeper, self._housekeeper = self._housekeeper, None
            self._stopping.set()
            _lanes.discard(self)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
            for thread in list(getattr(pool, "_threads", ())):
                thread.join(timeout)
        if housekeeper is not None:
            housekeeper.join(timeout)

    def _housekeep(self, stopping: threading.Event) -> None:
        if self._recover is not None:
            try:
                self._recover(self)
            except Exception:
                log.exception("%s: recovering what a previous process left failed", self.name)
        while True:
            _connection_close()
            if stopping.wait(max(1.0, self._every())):
                return
            try:
                self._reap()
            except Exception:
                log.exception("%s: the reaper failed", self.name)


_lanes: set[Lane] = set()


def lanes_stop(timeout: float = 10.0) -> None:
    """Stop every lane this process started."""
    for lane in list(_lanes):
        lane.stop(timeout)


def enqueue(name: str, *, kwargs: dict[str, Any], queue: str, lane: Lane) -> None:
    """Run task ``name`` with ``kwargs`` on ``queue`` (or, in the embedded default, on ``lane``).
    A broker that is away raises here: the caller decides what the row becomes."""
    if settings.EMBEDDED:
        lane.submit(task_run, name, kwargs)
        return
    current_app.send_task(name, kwargs=kwargs, queue=queue)


def task_run(name: str, kwargs: dict[str, Any]) -> None:
    """Call task ``name`` in this process (the embedded default), recorded for the workers page
    as Celery's would be; its errors are logged, not raised (nobody waits for it).

    A task that declares ``autoretry_for`` (the reply task: the database was away before it
    claimed its row) is run again as Celery would, after ``retry_backoff`` seconds doubling up to
    ``retry_backoff_max``, at most ``max_retries`` times: called directly, a Celery task does not
    retry itself, and a reply whose claim met a locked or restarting database stayed queued."""
    task = import_string(name)
    retry_for: tuple[type[BaseException], ...] = tuple(getattr(task, "autoretry_for", ()) or ())
    pause = float(getattr(task, "retry_backoff", 1) or 1)
    tries = 1 + int(getattr(task, "max_retries", 0) or 0) if retry_for else 1
    try:
        for attempt in range(1, tries + 1):
            try:
                with worker_task(name=name, kwargs=kwargs):
                    task(**kwargs)
                return
            except retry_for as exc:
                if attempt == tries:
                    raise
                log.warning("embedded task %s(%s): %s; trying again in %.1f s", name, kwargs, exc, pause)
                _connection_close()
                time.sleep(pause)
                pause = min(pause * 2, float(getattr(task, "retry_backoff_max", 30) or 30))
    except Exception:
        log.exception("embedded task %s(%s) failed", name, kwargs)
    finally:
        _connection_close()


def _connection_close() -> None:
    """This thread's database connection is closed between tasks and rounds; the thread must
    outlive any error in doing so (the database restarting), or nothing would run or reap."""
    try:
        close_old_connections()
    except Exception as exc:
        log.warning("closing the database connection failed: %s", exc)
