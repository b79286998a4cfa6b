"""Running one job: claim the row once, keep it alive, run its steps in child processes, finish.

- **Exactly once.** ``job_run`` claims the row with a conditional update (``queued -> running``);
  a second delivery of the same task finds nothing to claim and returns. The task is acknowledged
  when it starts (not when it ends), so the broker never redelivers a job that runs for hours.
- **Alive.** A heartbeat thread renews ``heartbeat_at`` every ``JOB_HEARTBEAT_SECONDS`` and
  flushes progress, stage and the log's tail; a running job whose heartbeat is older than
  ``JOB_STALE_SECONDS`` lost its worker and the reaper marks it ``interrupted``.
- **Cancellable.** Each step runs in a child process in its own process group (and dies with the
  worker: ``PR_SET_PDEATHSIG``, armed by ``inference.children``'s launcher, never ``preexec_fn``).
  The heartbeat thread polls the row every second; on a cancel (or when the row stopped being
  ours) it ends the whole group: SIGTERM, then SIGKILL.
- **Contained.** A step runs third-party code on files staff provide, so it gets an allowlisted
  environment (``inference.children.child_env``): never the worker's secrets.
- **No partial files.** A job writes into ``ARTIFACT_ROOT/.partial/job-<id>`` and the folder is
  renamed into place only when the job succeeds; anything else removes it.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import close_old_connections, transaction
from django.utils import timezone
from pydantic import ValidationError

from inference.children import child_env, die_with_parent
from pipeline.jobs import events
from pipeline.jobs.base import JobFailed, job_log_path
from pipeline.jobs.kinds import KINDS, Output
from pipeline.jobs.made import artifacts_create, evaluation_create
from pipeline.jobs.steps.protocol import PROGRESS_PREFIX, RESULT_PREFIX
from inference.models import Job, ModelArtifact

log = logging.getLogger(__name__)

LOG_TAIL_LINES = 200


class JobCancelled(Exception):
    pass


def artifact_root() -> Path:
    root = Path(settings.ARTIFACT_ROOT)
    root.mkdir(parents=True, exist_ok=True)
    return root


def partial_dir(job_id: int) -> Path:
    return artifact_root() / ".partial" / f"job-{job_id}"


def final_dir(job: Job) -> Path:
    return artifact_root() / f"job-{job.pk}-{job.kind}"


def log_path(job_id: int) -> Path:
    path = job_log_path(job_id)  # the one place the API reads it from too
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class JobContext:
    """What a kind's ``run`` uses: its source artifact, its work folder, and ``step``."""

    def __init__(self, job: Job, source: ModelArtifact | None) -> None:
        self.job = job
        self.source: ModelArtifact = source  # type: ignore[assignment]
        self.workdir = partial_dir(job.pk)
        self.cancelled = threading.Event()
        self.lost = threading.Event()  # the row is no longer ours (reaped, deleted)
        self._lock = threading.Lock()
        self._tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
        self._new_lines: list[str] = []
        self._progress = 0.0
        self._stage = "starting"
        self._dirty = True
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file = log_path(job.pk).open("a", encoding="utf-8")
        self.peak_rss = 0
        self.kill_grace = settings.JOB_KILL_GRACE_SECONDS
        self.metrics: dict[str, Any] = {}
        self.results: dict[str, Any] = {}
        self.evaluation: dict[str, Any] | None = None

    # --- reporting --------------------------------------------------------------------------

    def log(self, line: str) -> None:
        stamped = f"{time.strftime('%H:%M:%S')} {line.rstrip()}"
        with self._lock:
            self._tail.append(stamped)
            self._new_lines.append(stamped)
            self._dirty = True
        self._log_file.write(stamped + "\n")
        self._log_file.flush()

    def progress(self, percent: float, stage: str | None = None) -> None:
        with self._lock:
            self._progress = max(self._progress, min(100.0, percent))
            if stage is not None:
                self._stage = stage[:200]
            self._dirty = True

    def metrics_update(self, metrics: dict[str, Any]) -> None:
        """Keep a step's latest numbers, and a history of ``loss`` by ``step`` (thinned past 2000)."""
        with self._lock:
            merged = {**self.metrics, **metrics}
            if "loss" in metrics and "step" in metrics:
                history = [*self.metrics.get("loss_history", []), [metrics["step"], metrics["loss"]]]
                merged["loss_history"] = history[::2] if len(history) > 2000 else history
            self.metrics, self._dirty = merged, True

    def snapshot(self) -> tuple[float, str, str, list[str], bool]:
        with self._lock:
            lines, self._new_lines = self._new_lines, []
            dirty, self._dirty = self._dirty, False
            return self._progress, self._stage, "\n".join(self._tail), lines, dirty

    # --- steps in child processes ------------------------------------------------------------

    def step(
        self,
        name: str,
        params: dict[str, Any],
        *,
        span: tuple[float, float],
        env: str = "main",
        extra_env: dict[str, str] | None = None,  # secrets: not in the params, which the log shows
    ) -> dict[str, Any]:
        """Run ``python -m pipeline.jobs.steps <name>`` in its own process group and return its result."""
        if self.cancelled.is_set():
            raise JobCancelled()
        python = settings.JOB_PYTHONS.get(env)
        if not python or not Path(python).exists():
            raise JobFailed(f"the {env!r} environment this step needs is not installed here ({python}); "
                            f"build it with make {env}-venv on the worker")  # fmt: skip
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = die_with_parent([str(python), "-m", "pipeline.jobs.steps", name, json.dumps(params)])
        self.log(f"$ {Path(python).parent.parent.name}/bin/python -m pipeline.jobs.steps {name} {json.dumps(params)}")
        low, high = span
        # Started from this thread, which waits for the step: the parent-death signal is tied to it.
        proc = subprocess.Popen(
            argv, cwd=str(self.workdir), env=child_env(extra=extra_env), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self._proc = proc
        result: dict[str, Any] | None = None
        last_lines: collections.deque[str] = collections.deque(maxlen=20)
        try:
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                if line.startswith(PROGRESS_PREFIX):
                    try:
                        info = json.loads(line[len(PROGRESS_PREFIX) :])
                    except ValueError:
                        continue
                    self.progress(low + (high - low) * float(info.get("progress", 0)) / 100, info.get("stage"))
                    if isinstance(info.get("metrics"), dict):
                        self.metrics_update(info["metrics"])
                elif line.startswith(RESULT_PREFIX):
                    result = json.loads(line[len(RESULT_PREFIX) :])
                elif line.strip() and not _is_progress_bar(line):
                    last_lines.append(line)
                    self.log(line)
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            self.peak_rss = max(self.peak_rss, usage.ru_maxrss * 1024)
        finally:
            self._proc = None
            if proc.returncode is None:
                self.kill_children()
                proc.wait()
        if self.cancelled.is_set():
            raise JobCancelled()
        if proc.returncode != 0 or result is None:
            errors = [line for line in last_lines if line.startswith("error: ")]
            reason = errors[-1][len("error: ") :] if errors else (last_lines[-1] if last_lines else "no output")
            raise JobFailed(f"step {name} failed (exit status {proc.returncode}): {reason}")
        self.results[name] = result
        self.progress(high)
        return result

    def kill_children(self) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + self.kill_grace
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def evaluation_save(self, result: dict[str, Any]) -> None:
        self.evaluation = result

    def close(self) -> None:
        self._log_file.close()


_PROGRESS_BAR = re.compile(r"\d+%\|.*\|\s*\d+/\d+|[━█]{3,}|\d+(\.\d+)?(it/s|s/it)\]")


def _is_progress_bar(line: str) -> bool:
    """tqdm and rich progress bars, which fill a log and say nothing the progress bar does not."""
    return bool(_PROGRESS_BAR.search(line))


# --- the heartbeat ----------------------------------------------------------------------------


class _Heartbeat(threading.Thread):
    def __init__(self, ctx: JobContext) -> None:
        super().__init__(name=f"job-{ctx.job.pk}-heartbeat", daemon=True)
        self.ctx = ctx
        self.stopping = threading.Event()

    def run(self) -> None:
        last_beat = 0.0
        last_flush = 0.0
        try:
            while not self.stopping.wait(settings.JOB_CANCEL_POLL_SECONDS):
                now = time.monotonic()
                try:
                    self._check_cancel()
                    if now - last_beat >= settings.JOB_HEARTBEAT_SECONDS or now - last_flush >= 1.0:
                        if self._flush(beat=now - last_beat >= settings.JOB_HEARTBEAT_SECONDS) is not None:
                            last_flush = now
                        if now - last_beat >= settings.JOB_HEARTBEAT_SECONDS:
                            last_beat = now
                except Exception as exc:  # the database is away: the job goes on, the reaper decides
                    log.warning("job %s heartbeat failed: %s: %s", self.ctx.job.pk, type(exc).__name__, exc)
                    close_old_connections()
        finally:
            close_old_connections()

    def _check_cancel(self) -> None:
        row = Job.objects.filter(pk=self.ctx.job.pk).values_list("status", "cancel_requested").first()
        if row is None or row[0] != Job.Status.RUNNING:
            self.ctx.lost.set()
        if (row is None or row[0] != Job.Status.RUNNING or row[1]) and not self.ctx.cancelled.is_set():
            self.ctx.log("cancel requested: stopping" if row and row[1] else "the job is no longer ours: stopping")
            self.ctx.cancelled.set()
            # In its own thread: a step may take its grace period to stop (a fine-tune finishes its
            # step and saves a checkpoint), and the heartbeat must go on meanwhile.
            threading.Thread(target=self.ctx.kill_children, name=f"job-{self.ctx.job.pk}-stop", daemon=True).start()

    def _flush(self, *, beat: bool) -> bool | None:
        progress, stage, tail, lines, dirty = self.ctx.snapshot()
        if not dirty and not beat:
            return None
        fields: dict[str, Any] = {"progress": round(progress, 1), "stage": stage, "log": tail}
        if self.ctx.metrics:
            fields["metrics"] = self.ctx.metrics
        if beat:
            fields["heartbeat_at"] = timezone.now()
        updated = Job.objects.filter(pk=self.ctx.job.pk, status=Job.Status.RUNNING).update(**fields)
        if not updated:
            self.ctx.lost.set()
            return False
        if dirty:
            job = Job.objects.get(pk=self.ctx.job.pk)
            events.job_changed(job, new_lines=lines)
        return True


# --- the entry point --------------------------------------------------------------------------


def job_run(job_id: int, *, worker: str | None = None) -> bool:
    """Claim job ``job_id`` and run it to its end. False when there was nothing to claim."""
    now = timezone.now()
    claimed = Job.objects.filter(pk=job_id, status=Job.Status.QUEUED).update(
        status=Job.Status.RUNNING,
        worker=worker or worker_name(),
        started_at=now,
        heartbeat_at=now,
        stage="starting",
        progress=0.0,
        log_path=str(log_path(job_id)),
    )
    if not claimed:
        log.info("job %s: nothing to claim (already claimed, finished or cancelled)", job_id)
        return False
    job = Job.objects.select_related("created_by").get(pk=job_id)
    kind = KINDS[job.kind]
    source = ModelArtifact.objects.filter(pk=job.params.get("source")).first()
    ctx = JobContext(job, source)
    ctx.kill_grace = kind.kill_grace if kind.kill_grace is not None else ctx.kill_grace
    shutil.rmtree(ctx.workdir, ignore_errors=True)
    heartbeat = _Heartbeat(ctx)
    heartbeat.start()
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
        heartbeat.stopping.set()
        heartbeat.join(timeout=10)
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
    from pipeline.jobs.services import job_chain_next

    started, note = job_chain_next(job)
    ctx.log(note)
    if started is None:
        log.warning("job %s %s", job.pk, note)
