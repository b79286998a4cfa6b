"""Celery tasks of the pipeline: thin doors taking ids into the job runner and reaper."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from pipeline.jobs import reaper, runner


@shared_task(
    name="pipeline.tasks.job_run",
    # Acknowledged when it starts: the broker never redelivers a job that runs past its
    # visibility timeout. A worker that dies mid-job leaves the row `running`, and the reaper
    # marks it `interrupted` once its heartbeat lapses; the job is never run twice.
    acks_late=False,
    # The app's limits are for replies (minutes); a job has its own (hours).
    soft_time_limit=settings.JOB_TIME_LIMIT_SECONDS,
    time_limit=settings.JOB_TIME_LIMIT_SECONDS + 120,
)
def job_run(*, job_id: int) -> bool:
    """Claim and run the job; the row names this process (``inference.runtime.identity``)."""
    return runner.job_run(job_id)


@shared_task(name="pipeline.tasks.jobs_reap")
def jobs_reap() -> int:
    return reaper.jobs_reap()
