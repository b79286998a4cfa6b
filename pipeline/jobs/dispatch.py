"""Send a job to where it runs: its Celery queue, or the job lane of the embedded default.

The task is named, not imported (``inference.runtime.pool.enqueue``): this module knows neither
the task module nor the runner, so the services that queue a job import no runner.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.utils import timezone

from inference.models import Job
from inference.runtime.pool import Lane, enqueue, task_run
from pipeline.jobs import events
from pipeline.jobs.reaper import jobs_reap

log = logging.getLogger(__name__)

JOB_RUN = "pipeline.tasks.job_run"


def jobs_recover_embedded(lane: Lane) -> None:
    """The embedded default's queue is its own memory: a job a previous process left `running`
    is marked `interrupted` (once its heartbeat lapsed), one left `queued` runs now."""
    for job_id in Job.objects.filter(status=Job.Status.QUEUED).values_list("pk", flat=True):
        lane.submit(task_run, JOB_RUN, {"job_id": job_id})  # a second submit finds nothing to claim
    jobs_reap()


# One job at a time in the embedded default: jobs take the machine's cores.
LANE = Lane(
    "job",
    threads=lambda: 1,
    every=lambda: settings.JOB_STALE_SECONDS / 4,
    reap=jobs_reap,
    recover=jobs_recover_embedded,
)


def job_enqueue(job: Job) -> None:
    """Queue the job's task; a broker that is away ends the job ``failed`` with a note to retry."""
    try:
        enqueue(JOB_RUN, kwargs={"job_id": job.pk}, queue=job.queue, lane=LANE)
    except Exception as exc:
        log.error("job %s could not be queued: %s: %s", job.pk, type(exc).__name__, exc)
        Job.objects.filter(pk=job.pk, status=Job.Status.QUEUED).update(
            status=Job.Status.FAILED,
            error=f"The job could not be queued (the broker is unavailable: {exc}). Retry it.",
            finished_at=timezone.now(),
        )
        job.refresh_from_db()
        events.job_changed(job)


def embedded_recover() -> None:
    """In the embedded default, the first look at the jobs (the dashboard, the job API) starts the
    job lane and its reaper: a job a previous process left `running` is marked `interrupted`,
    one left `queued` runs."""
    if settings.EMBEDDED and not LANE.running:
        LANE.start()
