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
from celery.signals import worker_process_init, worker_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")

app = Celery("chatsite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["sessions_app", "inference"])


def _queue_names() -> list[str]:
    return list(app.amqp.queues.consume_from or app.amqp.queues)


@worker_ready.connect
def _on_worker_ready(sender: Any = None, **_: object) -> None:
    # A worker that restarts after a crash should not leave its replies `streaming` forever.
    from agents.preload import models_preload_in_background
    from inference.jobs.reaper import jobs_reap
    from inference.workers import worker_beat_start
    from sessions_app.reaper import replies_reap

    replies_reap()
    jobs_reap()
    worker_beat_start(hostname=getattr(sender, "hostname", None) or "worker", queues=_queue_names())
    # A prefork worker's pool processes run the replies (and preload there, below); a thread or
    # solo pool runs them in this process, so its models are loaded here.
    pool = getattr(sender, "pool", None)
    if pool is not None and "prefork" not in type(pool).__module__:
        models_preload_in_background(queues=_queue_names())


@worker_process_init.connect
def _on_pool_process_start(**_: object) -> None:
    from agents.preload import models_preload_in_background

    models_preload_in_background(queues=_queue_names())
