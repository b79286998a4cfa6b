"""Send a reply (or a supervisor's pick) to where it runs: the agent's Celery queue, or the reply
lane of the embedded default.

Tasks are named, not imported (``inference.runtime.pool.enqueue``): the services that queue a
reply import no task module, and through it no reply or turn code.
"""

from __future__ import annotations

import time
from datetime import timedelta

from django.conf import settings

from inference.runtime.identity import process_started_at
from inference.runtime.pool import Lane, enqueue, lanes_stop, task_run
from sessions_app.liveness import heartbeat_seconds
from sessions_app.models import Message, TurnChoice
from sessions_app.reaper import replies_reap, replies_reap_before

REPLY_GENERATE = "sessions_app.tasks.reply_generate"
TURN_CHOOSE = "sessions_app.tasks.turn_choose"


def replies_recover_embedded(pool: Lane) -> int:
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
        pool.submit(task_run, REPLY_GENERATE, {"message_id": message_id})  # a second run finds nothing to claim
    # Supervisors' picks it left queued were never asked either.
    queued = TurnChoice.objects.filter(status=TurnChoice.Status.QUEUED).values_list("user_message_id", flat=True)
    for user_message_id in set(queued):
        pool.submit(task_run, TURN_CHOOSE, {"user_message_id": user_message_id})
    return interrupted


LANE = Lane(
    "reply", threads=lambda: settings.EMBEDDED_REPLY_THREADS, every=lambda: settings.REPLY_STALE_SECONDS / 4,
    reap=replies_reap, recover=replies_recover_embedded,
)  # fmt: skip


def reply_enqueue(*, message_id: int, queue: str) -> None:
    """Run the reply task for this message on the agent's queue (or in-process)."""
    enqueue(REPLY_GENERATE, kwargs={"message_id": message_id}, queue=queue, lane=LANE)


def turn_choose_enqueue(*, user_message_id: int, queue: str) -> None:
    """Ask a session's supervisor who speaks next, on the supervisor's queue (or in-process)."""
    enqueue(TURN_CHOOSE, kwargs={"user_message_id": user_message_id}, queue=queue, lane=LANE)


def embedded_stop(timeout: float = 10.0) -> None:
    """End the embedded lanes and their reapers, waiting up to ``timeout`` seconds for each thread
    (a process that is done with them: the tests, before their database is emptied)."""
    lanes_stop(timeout)
