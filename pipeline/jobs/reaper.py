"""Jobs whose worker died: found by their lapsed heartbeat and ended ``interrupted``."""

from __future__ import annotations

import logging
import shutil
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from pipeline.jobs import events
from inference.models import Job

log = logging.getLogger(__name__)


def jobs_reap(*, stale_seconds: float | None = None) -> int:
    """Mark ``interrupted`` the running jobs whose heartbeat is older than ``stale_seconds``."""
    from pipeline.jobs.runner import partial_dir

    stale = stale_seconds if stale_seconds is not None else settings.JOB_STALE_SECONDS
    now = timezone.now()
    reaped = 0
    for job in Job.objects.filter(status=Job.Status.RUNNING, heartbeat_at__lte=now - timedelta(seconds=stale)):
        silent = (now - job.heartbeat_at).total_seconds() if job.heartbeat_at else stale
        reason = (
            f"The worker {job.worker or '(unknown)'} stopped renewing this job's heartbeat "
            f"(nothing for {silent:.0f} s): it was killed or lost its machine. Retry the job to run it again."
        )
        # Conditional on the heartbeat read above: a worker that renewed it meanwhile is alive.
        if Job.objects.filter(pk=job.pk, status=Job.Status.RUNNING, heartbeat_at=job.heartbeat_at).update(
            status=Job.Status.INTERRUPTED, error=reason, finished_at=now
        ):
            reaped += 1
            log.warning("job %s interrupted: %s", job.pk, reason)
            shutil.rmtree(partial_dir(job.pk), ignore_errors=True)
            job.refresh_from_db()
            events.job_changed(job)
    return reaped
