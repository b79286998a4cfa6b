"""Where a job's files are: its work folder, its final folder, its own folder and its log.

All of them follow from the settings and the job's id alone (a leaf: it imports no job module),
so the runner, the reaper, the kinds and the API agree on them.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

from inference.models import Job

# A job's own folder, kept after it ends (unlike its .partial work folder): a fine-tune's
# checkpoints, training data and loss curve. The API serves JOB_FILES from it.
JOB_FILES = ("loss.png", "loss.json", "bench.json", "bench.csv", "throughput.png", "ttft.png")


def artifact_root() -> Path:
    root = Path(settings.ARTIFACT_ROOT)
    root.mkdir(parents=True, exist_ok=True)
    return root


def partial_dir(job_id: int) -> Path:
    """The work folder a running job writes into; renamed into place only if the job succeeds."""
    return artifact_root() / ".partial" / f"job-{job_id}"


def final_dir(job: Job) -> Path:
    return artifact_root() / f"job-{job.pk}-{job.kind}"


def job_files_dir(job_id: int) -> Path:
    return Path(settings.ARTIFACT_ROOT) / "jobs" / f"job-{job_id}"


def job_log_path(job_id: int) -> Path:
    """Where job ``job_id``'s whole log is written (by the runner) and read (by the API): from the
    settings and the id alone. The row's ``log_path`` is only a note for people: a value someone
    wrote there (the admin, a shell) must never choose which file the API serves."""
    return Path(settings.ARTIFACT_ROOT) / "logs" / f"job-{int(job_id)}.log"


def log_path(job_id: int) -> Path:
    """``job_log_path``, its folder made: for the runner, which writes it."""
    path = job_log_path(job_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def last_checkpoint(job_id: int) -> Path | None:
    """The newest ``checkpoint-<step>`` the job saved, if any."""
    folder = job_files_dir(job_id) / "checkpoints"
    found = [p for p in folder.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return max(found, key=lambda p: int(p.name.split("-")[-1])) if found else None
