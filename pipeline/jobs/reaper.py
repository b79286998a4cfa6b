"""Jobs whose worker died: found by their lapsed heartbeat and ended ``interrupted``
(``inference.runtime.reaper``); their work folder is removed and the dashboard told."""

from __future__ import annotations

import shutil
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from inference.models import Job
from inference.runtime.reaper import reap
from pipeline.jobs import events
from pipeline.jobs.lease import JOBS
from pipeline.jobs.paths import partial_dir


def jobs_reap(*, stale_seconds: float | None = None) -> int:
    """Mark ``interrupted`` the running jobs whose heartbeat is older than ``stale_seconds``."""
    stale = stale_seconds if stale_seconds is not None else settings.JOB_STALE_SECONDS
    now = timezone.now()

    def ended(job: Job) -> dict[str, Any]:
        silent = (now - job.heartbeat_at).total_seconds() if job.heartbeat_at else stale
        reason = (
            f"The worker {job.worker or '(unknown)'} stopped renewing this job's heartbeat "
            f"(nothing for {silent:.0f} s): it was killed or lost its machine. Retry the job to run it again."
        )
        return {"status": Job.Status.INTERRUPTED, "error": reason, "finished_at": now}

    def aftermath(job: Job) -> None:
        shutil.rmtree(partial_dir(job.pk), ignore_errors=True)
        transaction.on_commit(lambda: events.job_changed(job))

    return reap(JOBS, before=now - timedelta(seconds=stale), values=ended, aftermath=aftermath)
