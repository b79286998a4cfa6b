"""Send a job to where it runs: its Celery queue, or a thread of the embedded default."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from pipeline.jobs import events
from inference.models import Job

log = logging.getLogger(__name__)

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def job_enqueue(job: Job) -> None:
    if settings.EMBEDDED:
        _embedded_pool().submit(_run_embedded, job.pk)
        return
    from pipeline.tasks import job_run

    try:
        job_run.apply_async(kwargs={"job_id": job.pk}, queue=job.queue)
    except Exception as exc:
        log.error("job %s could not be queued: %s: %s", job.pk, type(exc).__name__, exc)
        Job.objects.filter(pk=job.pk, status=Job.Status.QUEUED).update(
            status=Job.Status.FAILED,
            error=f"The job could not be queued (the broker is unavailable: {exc}). Retry it.",
            finished_at=timezone.now(),
        )
        job.refresh_from_db()
        events.job_changed(job)


def _embedded_pool() -> ThreadPoolExecutor:
    """One job at a time in the embedded default: jobs take the machine's cores."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="job")
            threading.Thread(target=_embedded_reaper, name="job-reaper", daemon=True).start()
        return _pool


def embedded_recover() -> None:
    """In the embedded default, the first look at the jobs (the dashboard, the job API) starts the
    job thread and its reaper: a job a previous process left `running` is marked `interrupted`,
    one left `queued` runs."""
    if settings.EMBEDDED and _pool is None:
        _embedded_pool()


def _embedded_reaper() -> None:
    from pipeline.jobs.reaper import jobs_reap

    first = True
    while True:
        try:
            if first:
                jobs_resume_embedded()
                first = False
            jobs_reap()
        except Exception:
            log.exception("the embedded job reaper failed")
        try:
            close_old_connections()
        except Exception as exc:  # the database restarting: the reaper must outlive it
            log.warning("job reaper: closing the database connection failed: %s", exc)
        time.sleep(max(1.0, settings.JOB_STALE_SECONDS / 4))


def _run_embedded(job_id: int) -> None:
    from pipeline.jobs.runner import job_run

    try:
        job_run(job_id, worker="embedded")
    except Exception:
        log.exception("embedded job %s crashed", job_id)
    finally:
        close_old_connections()


def jobs_resume_embedded() -> None:
    """The embedded default's queue is its own memory: jobs left queued by an earlier process run now."""
    for job_id in Job.objects.filter(status=Job.Status.QUEUED).values_list("pk", flat=True):
        _embedded_pool().submit(_run_embedded, job_id)
