"""The Celery app. Queues: one per backend kind, optionally per node (``llama_cpp``,
``openvino.edge-01``, ``vllm``), ``jobs`` for long jobs and ``default`` for housekeeping.

Start a worker for one kind with, for example::

    celery -A chatsite worker -Q llama_cpp --concurrency 1

A worker imports an engine only when a reply for it arrives (backends import lazily), so a worker
started for ``llama_cpp`` never loads OpenVINO or vLLM.
"""

from __future__ import annotations

import os

from celery import Celery
from celery.signals import worker_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")

app = Celery("chatsite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["inference"])


@worker_ready.connect
def _reap_on_start(**_: object) -> None:
    # A worker that restarts after a crash should not leave its replies `streaming` forever.
    from inference.replies import replies_reap

    replies_reap()
