"""Send a reply to where it runs: a Celery queue, or the embedded in-process pool."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.utils import timezone

log = logging.getLogger(__name__)

_pool: ThreadPoolExecutor | None = None
_started = timezone.now()
_pool_lock = threading.Lock()


def embedded_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=settings.EMBEDDED_REPLY_THREADS, thread_name_prefix="reply")
            _start_embedded_reaper()
            _pool.submit(_recover_after_restart, _pool)
        return _pool


def _recover_after_restart(pool: ThreadPoolExecutor) -> None:
    """The embedded default runs replies in this process only: whatever a previous process left
    `streaming` died with it, and whatever it left `queued` was never started."""
    from django.db import close_old_connections

    from inference.replies import replies_reap, reply_generate
    from sessions_app.models import Message

    try:
        replies_reap(stale_seconds=0, started_before=_started)
        for message_id in Message.objects.filter(status=Message.Status.QUEUED).values_list("pk", flat=True):
            pool.submit(_run_logged, reply_generate, message_id)  # a second submit finds nothing to claim
    except Exception:
        log.exception("recovering replies of a previous process failed")
    finally:
        close_old_connections()


def reply_enqueue(*, message_id: int, queue: str) -> None:
    """Run ``reply_generate`` for this message on the agent's queue (or in-process)."""
    if settings.EMBEDDED:
        from inference.replies import reply_generate

        embedded_pool().submit(_run_logged, reply_generate, message_id)
        return
    from inference.tasks import reply_generate as reply_task

    reply_task.apply_async(kwargs={"message_id": message_id}, queue=queue)


def _run_logged(fn, message_id: int) -> None:  # type: ignore[no-untyped-def]
    try:
        fn(message_id=message_id)
    except Exception:
        log.exception("embedded reply %s crashed", message_id)


def _start_embedded_reaper() -> None:
    """In the embedded default nothing else runs the reaper, so a daemon thread does."""

    def loop() -> None:
        import time

        from django.db import close_old_connections

        from inference.replies import replies_reap

        while True:
            time.sleep(max(5, settings.REPLY_STALE_SECONDS // 4))
            try:
                replies_reap()
            except Exception:
                log.exception("reaper failed")
            finally:
                close_old_connections()

    threading.Thread(target=loop, name="reply-reaper", daemon=True).start()
