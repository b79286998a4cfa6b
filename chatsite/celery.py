"""The Celery app. Queues: one per backend kind, optionally per node (``llama_cpp``,
``openvino.edge-01``, ``vllm``), ``jobs`` for long jobs and ``default`` for housekeeping.

Start a worker for one kind with, for example::

    celery -A chatsite worker -Q llama_cpp --concurrency 1

A worker imports an engine only when a reply for it arrives (backends import lazily), so a worker
started for ``llama_cpp`` never loads OpenVINO or vLLM.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.signals import (
    celeryd_after_setup,
    task_postrun,
    task_prerun,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
    worker_shutting_down,
)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")

from inference.runtime.heap import heap_freeze  # noqa: E402  # imports no app (safe before setup)

app = Celery("chatsite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["sessions_app", "pipeline"])


def _queue_names() -> list[str]:
    return list(app.amqp.queues.consume_from or app.amqp.queues)


def _pool_name(pool: Any) -> str:
    """As ``celery worker -P`` names it: prefork, threads, solo, eventlet, gevent."""
    name = type(pool).__module__.rsplit(".", 1)[-1] if pool is not None else ""
    return {"thread": "threads"}.get(name, name)


# The handlers import the apps inside: this module loads with the ``chatsite`` package, before
# Django is set up, so no model may be imported at its top.


@worker_ready.connect
def _on_worker_ready(sender: Any = None, **_: object) -> None:
    # A worker that restarts after a crash should not leave its replies `streaming` forever.
    from agents.preload import models_preload_in_background
    from inference.workers import worker_beat_start
    from pipeline.jobs.reaper import jobs_reap
    from sessions_app.reaper import replies_reap

    replies_reap()
    jobs_reap()
    heap_freeze("worker")
    pool = getattr(sender, "pool", None)
    worker_beat_start(
        hostname=getattr(sender, "hostname", None) or "worker",
        queues=_queue_names(),
        pool=_pool_name(pool),
        concurrency=getattr(pool, "limit", None),
    )
    # A prefork worker's pool processes run the replies (and preload there, below); a thread or
    # solo pool runs them in this process, so its models are loaded here.
    if pool is not None and "prefork" not in type(pool).__module__:
        models_preload_in_background(queues=_queue_names())


# The workers' beats (inference.workers): the main process's name is known before the pool forks,
# each pool child beats on its own (its models and tasks live there), and every process records
# the task it runs now. A graceful stop removes the worker from the list at once.


@celeryd_after_setup.connect
def _on_worker_setup(sender: Any = None, **_: object) -> None:
    from inference.workers import worker_identity_set

    worker_identity_set(hostname=str(sender or "worker"))


@worker_process_init.connect
def _on_pool_process_start(**_: object) -> None:
    from agents.preload import models_preload_in_background
    from inference.workers import worker_process_beat_start

    worker_process_beat_start()
    heap_freeze("worker pool process")
    models_preload_in_background(queues=_queue_names())


@worker_process_shutdown.connect
def _on_pool_process_exit(pid: int | None = None, **_: object) -> None:
    from inference.workers import worker_process_beat_stop

    worker_process_beat_stop(pid=pid or os.getpid())


@worker_shutting_down.connect
def _on_worker_stopping(**_: object) -> None:
    from inference.workers import worker_beat_stopping

    worker_beat_stopping()


@worker_shutdown.connect
def _on_worker_shutdown(**_: object) -> None:
    from inference.workers import worker_beat_stop

    worker_beat_stop()


@task_prerun.connect
def _on_task_start(task_id: str = "", task: Any = None, kwargs: dict[str, Any] | None = None, **_: object) -> None:
    from inference.workers import worker_task_started

    worker_task_started(task_id=task_id, name=getattr(task, "name", "") or "", kwargs=kwargs)


@task_postrun.connect
def _on_task_end(task_id: str = "", **_: object) -> None:
    from inference.workers import worker_task_finished

    worker_task_finished(task_id=task_id)
