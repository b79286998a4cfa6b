"""Running one job: claim the row once, keep it alive, run its kind, finish.

- **Exactly once.** ``job_run`` claims the row with a conditional update (``queued -> running``,
  ``inference.runtime.leases.claim``); a second delivery of the same task finds nothing to claim
  and returns. The task is acknowledged when it starts (not when it ends), so the broker never
  redelivers a job that runs for hours.
- **Alive.** The process's heartbeat (``inference.runtime``) renews ``heartbeat_at`` of the row
  it holds every ``JOB_HEARTBEAT_SECONDS``; a running job whose heartbeat is older than
  ``JOB_STALE_SECONDS`` lost its worker and the reaper marks it ``interrupted``.
- **Cancellable.** The kind runs its steps in child processes (``pipeline.jobs.context``). A
  monitor thread polls the row every ``JOB_CANCEL_POLL_SECONDS`` and flushes progress, stage and
  the log's tail; on a cancel (or when the row stopped being ours) it ends the step's process
  group: SIGTERM, then SIGKILL.
- **No partial files.** A job writes into ``ARTIFACT_ROOT/.partial/job-<id>`` and the folder is
  renamed into place only when the job succeeds; anything else removes it.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from typing import Any

from django.conf import settings
from django.db import close_old_connections, transaction
from django.utils import timezone
from pydantic import ValidationError

from inference.models import Job, ModelArtifact
from inference.runtime.identity import worker_name
from inference.runtime.leases import claim, heartbeat
from pipeline.jobs import events
from pipeline.jobs.context import JobContext
from pipeline.jobs.errors import JobCancelled, JobFailed
from pipeline.jobs.kinds import KINDS, Output
from pipeline.jobs.lease import JOBS
from pipeline.jobs.made import artifacts_create, evaluation_create
from pipeline.jobs.paths import final_dir, log_path, partial_dir
from pipeline.jobs.services import job_chain_next

log = logging.getLogger(__name__)

# Read by the tests and the API's callers as the runner's (the context and paths are their homes).
__all__ = ["JobCancelled", "JobContext", "JobFailed", "job_run", "log_path", "partial_dir"]


# --- the monitor ------------------------------------------------------------------------------


class _Monitor(threading.Thread):
    """Polls the row for a cancel and flushes the job's progress, stage, metrics and log tail.
    The lease itself is renewed by the process's heartbeat (``inference.runtime.leases``)."""

    def __init__(self, ctx: JobContext) -> None:
        super().__init__(name=f"job-{ctx.job.pk}-monitor", daemon=True)
        self.ctx = ctx
        self.stopping = threading.Event()

    def run(self) -> None:
        last_flush = 0.0
        try:
            while not self.stopping.wait(settings.JOB_CANCEL_POLL_SECONDS):
                now = time.monotonic()
                try:
                    self._check_cancel()
                    if now - last_flush >= 1.0 and self._flush() is not None:
                        last_flush = now
                except Exception as exc:  # the database is away: the job goes on, the reaper decides
                    log.warning("job %s monitor failed: %s: %s", self.ctx.job.pk, type(exc).__name__, exc)
                    close_old_connections()
        finally:
            close_old_connections()

    def _check_cancel(self) -> None:
        row = Job.objects.filter(pk=self.ctx.job.pk).values_list("status", "cancel_requested").first()
        if row is None or row[0] != Job.Status.RUNNING:
            self.ctx.lost.set()
        if (self.ctx.lost.is_set() or (row and row[1])) and not self.ctx.cancelled.is_set():
            self.ctx.log("cancel requested: stopping" if row and row[1] else "the job is no longer ours: stopping")
            self.ctx.cancelled.set()
            # In its own thread: a step may take its grace period to stop (a fine-tune finishes its
            # step and saves a checkpoint), and the monitor must go on meanwhile.
            threading.Thread(target=self.ctx.kill_children, name=f"job-{self.ctx.job.pk}-stop", daemon=True).start()

    def _flush(self) -> bool | None:
        progress, stage, tail, lines, dirty = self.ctx.snapshot()
        if not dirty:
            return None
        fields: dict[str, Any] = {"progress": round(progress, 1), "stage": stage, "log": tail}
        if self.ctx.metrics:
            fields["metrics"] = self.ctx.metrics
        updated = Job.objects.filter(pk=self.ctx.job.pk, status=Job.Status.RUNNING).update(**fields)
        if not updated:
            self.ctx.lost.set()
            return False
        job = Job.objects.get(pk=self.ctx.job.pk)
        events.job_changed(job, new_lines=lines)
        return True


# --- the entry point --------------------------------------------------------------------------


def job_run(job_id: int, *, worker: str | None = None) -> bool:
    """Claim job ``job_id`` and run it to its end. False when there was nothing to claim."""
    claimed = claim(
        JOBS, job_id, queued=Job.Status.QUEUED, worker=worker or worker_name(), started_at=timezone.now(),
        stage="starting", progress=0.0, log_path=str(log_path(job_id)),
    )  # fmt: skip
    if not claimed:
        log.info("job %s: nothing to claim (already claimed, finished or cancelled)", job_id)
        return False
    job = Job.objects.select_related("created_by").get(pk=job_id)
    kind = KINDS[job.kind]
    source = ModelArtifact.objects.filter(pk=job.params.get("source")).first()
    ctx = JobContext(job, source)
    ctx.kill_grace = kind.kill_grace if kind.kill_grace is not None else ctx.kill_grace
    shutil.rmtree(ctx.workdir, ignore_errors=True)
    lease = heartbeat().hold(JOBS, job.pk, worker=job.worker)
    ctx.lost = lease.lost  # the heartbeat finds the row taken: the monitor stops the job
    monitor = _Monitor(ctx)
    monitor.start()
    outcome, error, artifacts = Job.Status.FAILED, "", []
    started = time.monotonic()
    try:
        ctx.log(f"job {job.pk} ({job.kind}) claimed by {job.worker}")
        events.job_changed(job)
        try:
            params = kind.params.model_validate(job.params)
        except ValidationError as exc:
            raise JobFailed(f"invalid parameters: {exc}") from None
        if source is None:
            raise JobFailed(f"the source artifact {job.params.get('source')} no longer exists")
        outputs = kind.run(ctx, params)
        if ctx.cancelled.is_set():
            raise JobCancelled()
        outcome = Job.Status.SUCCEEDED
        artifacts = outputs
    except JobCancelled:
        outcome = Job.Status.CANCELLED
        error = "Cancelled." if not ctx.lost.is_set() else "The job was taken away from this worker."
    except JobFailed as exc:
        error = str(exc)
    except Exception as exc:
        log.exception("job %s crashed", job_id)
        error = f"{type(exc).__name__}: {exc}"
    finally:
        monitor.stopping.set()
        monitor.join(timeout=10)
        heartbeat().release(lease)
    ctx.log(f"{outcome} after {time.monotonic() - started:.1f} s" + (f": {error}" if error else ""))
    try:
        _finish(ctx, outcome, error, artifacts)
    finally:
        ctx.close()
        shutil.rmtree(ctx.workdir, ignore_errors=True)
    return True


def _finish(ctx: JobContext, outcome: str, error: str, outputs: list[Output]) -> None:
    job = ctx.job
    progress, stage, tail, _, _ = ctx.snapshot()
    fields: dict[str, Any] = {
        "status": outcome,
        "error": error,
        "log": tail,
        "finished_at": timezone.now(),
        "heartbeat_at": timezone.now(),
        "result": ctx.results,
        "peak_rss_bytes": ctx.peak_rss or None,
        "metrics": ctx.metrics,
        "stage": "done" if outcome == Job.Status.SUCCEEDED else stage,
        "progress": 100.0 if outcome == Job.Status.SUCCEEDED else progress,
    }
    target = final_dir(job)
    moved = False
    try:
        with transaction.atomic():
            # Conditional on still running: a reaped (interrupted) job is not revived here.
            if not Job.objects.filter(pk=job.pk, status=Job.Status.RUNNING).update(**fields):
                log.warning("job %s was no longer running when it finished; its work is dropped", job.pk)
                return
            if outcome == Job.Status.SUCCEEDED:
                if outputs:
                    shutil.rmtree(target, ignore_errors=True)
                    os.replace(ctx.workdir, target)
                    moved = True
                    artifacts_create(job, ctx.source, target, outputs)
                if ctx.evaluation is not None:
                    evaluation_create(job, ctx.source, ctx.evaluation)
    except Exception:
        if moved:
            shutil.rmtree(target, ignore_errors=True)
        raise
    job.refresh_from_db()
    events.job_changed(job)
    if outcome == Job.Status.SUCCEEDED and (outputs or ctx.evaluation is not None):
        events.artifacts_changed()
    if outcome == Job.Status.SUCCEEDED and job.params.get("then"):
        _chain_next(ctx, job)


def _chain_next(ctx: JobContext, job: Job) -> None:
    started, note = job_chain_next(job)
    ctx.log(note)
    if started is None:
        log.warning("job %s %s", job.pk, note)
