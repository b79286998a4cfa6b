"""Celery tasks of the inference layer: thin doors taking ids into the job runner."""

from __future__ import annotations

from typing import Any

from celery import shared_task
from django.conf import settings


@shared_task(
    name="pipeline.tasks.job_run",
    bind=True,
    # Acknowledged when it starts: the broker never redelivers a job that runs past its
    # visibility timeout. A worker that dies mid-job leaves the row `running`, and the reaper
    # marks it `interrupted` once its heartbeat lapses; the job is never run twice.
    acks_late=False,
    # The app's limits are for replies (minutes); a job has its own (hours).
    soft_time_limit=settings.JOB_TIME_LIMIT_SECONDS,
    time_limit=settings.JOB_TIME_LIMIT_SECONDS + 120,
)
def job_run(self: Any, *, job_id: int) -> bool:
    from pipeline.jobs.runner import job_run as run
    from pipeline.jobs.runner import worker_name

    hostname = getattr(self.request, "hostname", None)
    return run(job_id, worker=f"{hostname} ({worker_name()})" if hostname else None)


@shared_task(name="pipeline.tasks.jobs_reap")
def jobs_reap() -> int:
    from pipeline.jobs.reaper import jobs_reap as reap

    return reap()
