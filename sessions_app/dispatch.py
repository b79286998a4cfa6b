"""Send a reply to where it runs: a Celery queue, or the embedded in-process pool."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from django.conf import settings
from django.db import close_old_connections

from inference.workers import worker_task
from sessions_app.liveness import heartbeat_seconds
from sessions_app.models import Message, TurnChoice
from sessions_app.reaper import process_started_at, replies_reap, replies_reap_before
from sessions_app.replies import reply_generate

log = logging.getLogger(__name__)

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
_stopping = threading.Event()  # set by embedded_stop: the reaper thread ends
_reaper: threading.Thread | None = None


def reply_enqueue(*, message_id: int, queue: str) -> None:
    """Run ``reply_generate`` for this message on the agent's queue (or in-process)."""
    if settings.EMBEDDED:
        embedded_pool().submit(_run_logged, message_id)
        return
    from sessions_app.tasks import reply_generate as reply_task

    reply_task.apply_async(kwargs={"message_id": message_id}, queue=queue)


def turn_choose_enqueue(*, user_message_id: int, queue: str) -> None:
    """Ask a session's supervisor who speaks next, on the supervisor's queue (or in-process)."""
    if settings.EMBEDDED:
        embedded_pool().submit(_choose_logged, user_message_id)
        return
    from sessions_app.tasks import turn_choose as choose_task

    choose_task.apply_async(kwargs={"user_message_id": user_message_id}, queue=queue)


def _choose_logged(user_message_id: int) -> None:
    from sessions_app.turns import turn_choose

    try:
        with worker_task(name="sessions_app.tasks.turn_choose", kwargs={"user_message_id": user_message_id}):
            turn_choose(user_message_id=user_message_id)
    except Exception:
        log.exception("the supervisor's pick for message %s failed", user_message_id)
    finally:
        _close_connection()


def embedded_pool() -> ThreadPoolExecutor:
    global _pool, _stopping, _reaper
    with _pool_lock:
        if _pool is None:
            _stopping = threading.Event()
            _pool = ThreadPoolExecutor(max_workers=settings.EMBEDDED_REPLY_THREADS, thread_name_prefix="reply")
            _reaper = threading.Thread(
                target=_embedded_reaper, args=(_pool, _stopping), name="reply-reaper", daemon=True
            )
            _reaper.start()
        return _pool


def embedded_stop(timeout: float = 10.0) -> None:
    """End the embedded pool and its reaper, waiting up to ``timeout`` seconds for each thread
    (a process that is done with them: the tests, before their database is emptied)."""
    global _pool, _reaper
    with _pool_lock:
        pool, _pool = _pool, None
        reaper, _reaper = _reaper, None
        _stopping.set()
    if pool is not None:
        pool.shutdown(wait=False, cancel_futures=True)
        for thread in list(getattr(pool, "_threads", ())):
            thread.join(timeout)
    if reaper is not None:
        reaper.join(timeout)


def _run_logged(message_id: int) -> None:
    try:
        with worker_task(name="sessions_app.tasks.reply_generate", kwargs={"message_id": message_id}):
            reply_generate(message_id=message_id)
    except Exception:
        log.exception("embedded reply %s crashed", message_id)


def replies_recover_embedded(pool: ThreadPoolExecutor) -> int:
    """The embedded default runs replies in its own process: what a previous process left
    `streaming` died with it (ended ``interrupted``), what it left `queued` was never started
    (run now). Returns how many were interrupted."""
    started = process_started_at()
    # Give a live process beside this one (a terminal chat) the time to renew its heartbeats.
    settle = (started + timedelta(seconds=2 * heartbeat_seconds())).timestamp() - time.time()
    if settle > 0:
        time.sleep(settle)
    interrupted = replies_reap_before(moment=started)
    for message_id in Message.objects.filter(status=Message.Status.QUEUED).values_list("pk", flat=True):
        pool.submit(_run_logged, message_id)  # a second submit finds nothing to claim
    # Supervisors' picks it left queued were never asked either.
    queued = TurnChoice.objects.filter(status=TurnChoice.Status.QUEUED).values_list("user_message_id", flat=True)
    for user_message_id in set(queued):
        pool.submit(_choose_logged, user_message_id)
    return interrupted


def _embedded_reaper(pool: ThreadPoolExecutor, stopping: threading.Event) -> None:
    """In the embedded default nothing else runs the reaper, so a daemon thread does."""
    try:
        replies_recover_embedded(pool)
    except Exception:
        log.exception("recovering replies of a previous process failed")
    while True:
        _close_connection()
        if stopping.wait(max(1.0, settings.REPLY_STALE_SECONDS / 4)):
            return
        try:
            replies_reap()
        except Exception:
            log.exception("reaper failed")


def _close_connection() -> None:
    """This thread's database connection is closed between rounds; the reaper must outlive any
    error in doing so (the database restarting), or nothing would reap in the embedded default."""
    try:
        close_old_connections()
    except Exception as exc:
        log.warning("reaper: closing the database connection failed: %s", exc)
