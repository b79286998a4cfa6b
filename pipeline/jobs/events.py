"""Job progress over the channel layer, to the job dashboard's websocket (group ``jobs``)."""

from __future__ import annotations

import logging
from typing import Any

from inference.models import Job
from pipeline.jobs.paths import JOB_FILES, job_files_dir, last_checkpoint
from sessions_app import broadcast

log = logging.getLogger(__name__)

GROUP = "jobs"


def job_payload(job: Job) -> dict[str, Any]:
    """A job as the API and the dashboard show it."""
    return {
        "id": job.pk,
        "kind": job.kind,
        "params": job.params,
        "status": job.status,
        "progress": round(job.progress, 1),
        "stage": job.stage,
        "eta_seconds": job.eta_seconds(),
        "error": job.error,
        "log_tail": job.log,
        "queue": job.queue,
        "worker": job.worker,
        "cancel_requested": job.cancel_requested,
        "retry_of": job.retry_of_id,
        "after": job.after_id,
        "metrics": job.metrics,
        "files": job_files(job),
        "resumable": job_resumable(job),
        "created_by": job.created_by.get_username() if job.created_by_id and job.created_by else None,
        "created_at": job.created_at.isoformat() if job.created_at else None,
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "heartbeat_at": job.heartbeat_at.isoformat() if job.heartbeat_at else None,
        "duration_seconds": job.duration_seconds(),
        "peak_rss_bytes": job.peak_rss_bytes,
        "result": job.result,
        # .all() uses the job list's prefetch (values_list would query once per job).
        "artifacts": sorted(a.pk for a in job.artifacts.all()) if job.pk else [],
    }


def job_files(job: Job) -> dict[str, str]:
    """The files of the job's own folder that the API serves (a fine-tune's loss curve)."""
    folder = job_files_dir(job.pk) if job.pk else None
    return {name: f"/api/jobs/{job.pk}/files/{name}" for name in JOB_FILES if folder and (folder / name).is_file()}


def job_resumable(job: Job) -> bool:
    """An ended, unsucceeded job that saved a checkpoint (POST /api/jobs/{id}/resume/)."""
    if not job.pk or not job.is_finished or job.status == Job.Status.SUCCEEDED:
        return False
    return last_checkpoint(job.pk) is not None


def group_send(event: dict[str, Any]) -> None:
    """Send to the dashboard; never raises (the job goes on when Redis is away)."""
    try:
        broadcast.group_send(GROUP, event)
    except Exception as exc:
        log.warning("job event not sent: %s: %s", type(exc).__name__, exc)


def job_changed(job: Job, *, new_lines: list[str] | None = None) -> None:
    group_send({"type": "job.changed", "job": job_payload(job), "lines": new_lines or []})


def artifacts_changed() -> None:
    group_send({"type": "artifacts.changed"})
