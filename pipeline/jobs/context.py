"""What a kind's ``run`` works with: ``JobContext``, the job's reporting and its steps.

A kind runs its heavy work through ``ctx.step``: ``python -m pipeline.jobs.steps <name>`` in a
child process in its own process group, dying with the worker (``PR_SET_PDEATHSIG``, armed by
``inference.children``'s launcher, never ``preexec_fn``), with an allowlisted environment
(``inference.children.child_env``): never the worker's secrets. The runner's monitor thread ends
the group on a cancel (``kill_children``). Progress, stage, metrics and the log's tail are kept
here; the runner flushes them to the row.
"""

from __future__ import annotations

import collections
import json
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from django.conf import settings

from inference.children import Progress, child_env, group_stop, lines_follow, spawn, wait_with_usage
from inference.models import Job, ModelArtifact
from pipeline.jobs.errors import JobCancelled, JobFailed
from pipeline.jobs.paths import log_path, partial_dir

LOG_TAIL_LINES = 200


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
        argv = [str(python), "-m", "pipeline.jobs.steps", name, json.dumps(params)]
        self.log(f"$ {Path(python).parent.parent.name}/bin/python -m pipeline.jobs.steps {name} {json.dumps(params)}")
        low, high = span

        def on_progress(reported: Progress) -> None:
            self.progress(low + (high - low) * reported.percent / 100, reported.stage)
            if reported.metrics is not None:
                self.metrics_update(reported.metrics)

        # Started from this thread, which waits for the step: the parent-death signal is tied to it.
        proc = spawn(argv, cwd=self.workdir, env=child_env(extra=extra_env), stdout=subprocess.PIPE,
                     stderr=subprocess.STDOUT)  # fmt: skip
        self._proc = proc
        try:
            assert proc.stdout is not None
            report = lines_follow(proc.stdout, on_progress=on_progress, on_log=self.log)
            _, peak_rss = wait_with_usage(proc)
            self.peak_rss = max(self.peak_rss, peak_rss)
        finally:
            self._proc = None
            if proc.returncode is None:  # this thread was interrupted: end the step, and reap it
                group_stop(proc, grace=self.kill_grace)
        if self.cancelled.is_set():
            raise JobCancelled()
        if proc.returncode != 0 or report.result is None:
            raise JobFailed(f"step {name} failed (exit status {proc.returncode}): {report.failure_reason()}")
        self.results[name] = report.result
        self.progress(high)
        return report.result

    def kill_children(self) -> None:
        """End the running step's process group: SIGTERM, SIGKILL after ``kill_grace``. The step's
        own thread reaps it (for its peak memory), so this one never waits for it."""
        proc = self._proc
        if proc is not None:
            group_stop(proc, grace=self.kill_grace, reap=False)

    def evaluation_save(self, result: dict[str, Any]) -> None:
        self.evaluation = result

    def close(self) -> None:
        self._log_file.close()
