"""Starting, cancelling and retrying jobs: what every door (REST, dashboard, admin) calls."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone
from pydantic import ValidationError

from inference.models import Job, ModelArtifact
from pipeline.jobs import dispatch, events
from pipeline.jobs.errors import JobError
from pipeline.jobs.kinds import KINDS, Params

# JobError lives in the leaf pipeline.jobs.errors (the kinds raise it too); the doors read it here.
__all__ = ["JobError", "job_cancel", "job_chain_next", "job_create", "job_params_validate", "job_resume", "job_retry"]


def _parse(params_type: type[Params], params: Any, prefix: str) -> Params:
    try:
        return params_type.model_validate(params)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or ""
        field = f"{prefix}.{where}" if where else prefix
        raise JobError(str(first["msg"]).removeprefix("Value error, "), field=field) from None


def _chain_check(kind: str, parsed: Params) -> None:
    """Each ``then`` step names a kind whose params are valid and which takes what the one before makes."""
    makes = KINDS[kind].makes(parsed)
    before = kind
    for i, step in enumerate(parsed.then):
        where = f"params.then.{i}"
        if step.kind not in KINDS:
            raise JobError(f"unknown kind {step.kind!r}; one of {', '.join(KINDS)}", field=f"{where}.kind")
        if "source" in step.params:
            raise JobError("leave source out: the chain fills it in", field=f"{where}.params.source")
        nxt = KINDS[step.kind]
        p = _parse(nxt.params, {**step.params, "source": parsed.source or 0}, f"{where}.params")
        if p.then:
            raise JobError("list every step in the first job's then", field=f"{where}.params.then")
        if makes is None:
            raise JobError(f"{before} makes no artifact for {step.kind} to take", field=f"{where}.kind")
        if makes not in nxt.sources:
            formats = ", ".join(ModelArtifact.Format(f).label for f in nxt.sources)
            raise JobError(
                f"{step.kind} takes a {formats} artifact; {before} makes {ModelArtifact.Format(makes).label}",
                field=f"{where}.kind",
            )
        if nxt.source_check is not None:
            problem = nxt.source_check(p, ModelArtifact(format=makes, details={}))
            if problem:
                raise JobError(problem.replace("artifact None", f"what {before} makes"), field=f"{where}.params")
        makes, before = nxt.makes(p), step.kind


def job_params_validate(
    kind: str, params: Any, *, user: Any = None, commit: bool = False
) -> tuple[Params, ModelArtifact]:
    """The typed params of ``kind`` and its source artifact, or a JobError naming the bad field.

    ``commit`` (inside job_create's transaction) lets a kind store what the job will need, such as
    a snapshot of the chat sessions a fine-tune trains on."""
    if kind not in KINDS:
        raise JobError(f"unknown kind {kind!r}; one of {', '.join(KINDS)}", field="kind")
    if not isinstance(params, dict):
        raise JobError("params must be an object", field="params")
    spec = KINDS[kind]
    parsed = _parse(spec.params, params, "params")
    _chain_check(kind, parsed)
    if spec.prepare is not None:
        parsed = spec.prepare(parsed, user, False)
    if parsed.source is None:
        raise JobError("required: the id of the input artifact", field="params.source")
    # Another user's private artifact (a snapshot of their chats) answers as if it did not exist.
    source = ModelArtifact.objects.visible_to(user).filter(pk=parsed.source).first()
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
    usable = ModelArtifact.objects.visible_to(user).filter(format=ModelArtifact.Format.DATASET)
    if dataset is not None and not usable.filter(pk=dataset).exists():
        raise JobError(f"no dataset artifact with id {dataset}", field="params.dataset")
    if commit and spec.prepare is not None:  # everything checked: now store what the job needs
        parsed = spec.prepare(parsed, user, True)
    return parsed, source


def job_create(
    *, kind: str, params: Any, user: Any = None, retry_of: Job | None = None, after: Job | None = None
) -> Job:
    with transaction.atomic():
        parsed, _source = job_params_validate(kind, params, user=user, commit=True)
        spec = KINDS[kind]
        job = Job.objects.create(
            kind=kind,
            params=parsed.model_dump(),
            queue=spec.queue_for(parsed) if spec.queue_for else spec.queue,
            created_by=user if user is not None and user.is_authenticated else None,
            retry_of=retry_of,
            after=after,
            stage="queued",
        )
        transaction.on_commit(lambda: dispatch.job_enqueue(job))
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


def job_resume(job: Job, *, user: Any = None) -> Job:
    """A new job that goes on from the last checkpoint ``job`` saved (a cancelled fine-tune, say)."""
    if not job.is_finished:
        raise JobError(f"job {job.pk} is still {job.status}; cancel it first", code="job_not_finished", status=409)
    if job.status == Job.Status.SUCCEEDED:
        raise JobError(f"job {job.pk} has succeeded; there is nothing to resume", code="job_finished", status=409)
    if "resume_from" not in KINDS[job.kind].params.model_fields:
        raise JobError(f"{job.kind} jobs cannot resume; retry it instead", code="not_resumable", status=409)
    return job_create(kind=job.kind, params={**job.params, "resume_from": job.pk}, user=user, retry_of=job)


def job_chain_next(job: Job) -> tuple[Job | None, str]:
    """Start the first job of a succeeded job's ``then`` on its first artifact, handing it the rest.
    The new job (or None) and a line for the log; a chain that cannot go on notes why in ``error``."""
    first, *rest = job.params["then"]
    made = job.artifacts.order_by("id").first()
    try:
        if made is None:
            raise JobError("this job made no artifact to go on with")
        params = {**first.get("params", {}), "source": made.pk, "then": rest}
        nxt = job_create(kind=first["kind"], params=params, user=job.created_by, after=job)
    except JobError as exc:
        note = f"then: {first['kind']} was not started: {exc.field + ': ' if exc.field else ''}{exc.message}"
        Job.objects.filter(pk=job.pk).update(error=note)
        job.refresh_from_db()
        events.job_changed(job)
        return None, note
    return nxt, f"then: {nxt.kind} started as job {nxt.pk}"
