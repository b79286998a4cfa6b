"""Starting, cancelling and retrying jobs: what every door (REST, dashboard, admin) calls."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone
from pydantic import ValidationError

from inference.jobs import events
from inference.jobs.kinds import KINDS, Params
from inference.models import Job, ModelArtifact


class JobError(Exception):
    """A request about a job that cannot be done; ``field`` names the parameter at fault."""

    def __init__(self, message: str, *, field: str | None = None, code: str = "invalid", status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.code = code
        self.status = status


def job_params_validate(kind: str, params: Any) -> tuple[Params, ModelArtifact]:
    """The typed params of ``kind`` and its source artifact, or a JobError naming the bad field."""
    if kind not in KINDS:
        raise JobError(f"unknown kind {kind!r}; one of {', '.join(KINDS)}", field="kind")
    if not isinstance(params, dict):
        raise JobError("params must be an object", field="params")
    spec = KINDS[kind]
    try:
        parsed = spec.params.model_validate(params)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "params"
        raise JobError(str(first["msg"]).removeprefix("Value error, "), field=f"params.{where}") from None
    source = ModelArtifact.objects.filter(pk=parsed.source).first()
    if source is None:
        raise JobError(f"no artifact with id {parsed.source}", field="params.source")
    if source.format not in spec.sources:
        formats = ", ".join(ModelArtifact.Format(f).label for f in spec.sources)
        raise JobError(
            f"{kind} takes a {formats} artifact; artifact {source.pk} is {source.get_format_display()}",
            field="params.source",
        )
    if spec.source_check is not None:
        problem = spec.source_check(parsed, source)
        if problem:
            raise JobError(problem, field="params.source")
    dataset = getattr(parsed, "dataset", None)
    if (
        dataset is not None
        and not ModelArtifact.objects.filter(pk=dataset, format=ModelArtifact.Format.DATASET).exists()
    ):
        raise JobError(f"no dataset artifact with id {dataset}", field="params.dataset")
    return parsed, source


def job_create(*, kind: str, params: Any, user: Any = None, retry_of: Job | None = None) -> Job:
    from inference.jobs.dispatch import job_enqueue

    parsed, _source = job_params_validate(kind, params)
    with transaction.atomic():
        job = Job.objects.create(
            kind=kind,
            params=parsed.model_dump(),
            queue=KINDS[kind].queue,
            created_by=user if user is not None and user.is_authenticated else None,
            retry_of=retry_of,
            stage="queued",
        )
        transaction.on_commit(lambda: job_enqueue(job))
    events.job_changed(job)
    return job


def job_cancel(job: Job) -> Job:
    """A queued job is cancelled at once; a running one is asked to stop (within seconds)."""
    now = timezone.now()
    if Job.objects.filter(pk=job.pk, status=Job.Status.QUEUED).update(
        status=Job.Status.CANCELLED, finished_at=now, error="Cancelled before it started.", stage="cancelled"
    ):
        pass
    elif not Job.objects.filter(pk=job.pk, status=Job.Status.RUNNING).update(cancel_requested=True):
        job.refresh_from_db()
        raise JobError(f"job {job.pk} has already ended ({job.status})", code="job_finished", status=409)
    job.refresh_from_db()
    events.job_changed(job)
    return job


def job_retry(job: Job, *, user: Any = None) -> Job:
    """A new job with the same kind and parameters (the old one stays as it ended)."""
    if not job.is_finished:
        raise JobError(f"job {job.pk} is still {job.status}; cancel it first", code="job_not_finished", status=409)
    return job_create(kind=job.kind, params=job.params, user=user, retry_of=job)
