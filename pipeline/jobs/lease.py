"""The jobs table as the task runtime holds it: a running job's row is renewed every
``JOB_HEARTBEAT_SECONDS`` by its process's heartbeat, and reaped after ``JOB_STALE_SECONDS``."""

from __future__ import annotations

from django.conf import settings

from inference.models import Job
from inference.runtime.leases import Leased

JOBS = Leased("job", Job, Job.Status.RUNNING, period=lambda: float(settings.JOB_HEARTBEAT_SECONDS))
