"""REST API of the model pipeline (staff only): jobs, artifacts, workers.

``POST /api/jobs/`` ``{"kind", "params"}`` starts a job (``params.source`` is the input artifact's
id); a bad value answers 400 naming it (``params.type``). Other users get 403, anonymous 401.

Who may do what: reading (jobs, their logs and files, artifacts, workers, kinds) is for staff, as
the dashboard is. A change also needs the Django model permission the admin asks for: starting a
job (create, retry, resume) ``inference.add_job``, cancelling one ``inference.change_job``,
uploading a dataset ``inference.add_modelartifact`` (superusers hold them all). Without it: 403
naming the permission, and nothing is done.

A refusal (``JobError``) is not caught here: ``chatsite.api_errors`` answers it, naming its field.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Prefetch, QuerySet
from django.http import FileResponse, Http404
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_view, inline_serializer
from rest_framework import permissions, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from inference.backends.registry import backend_for_format
from inference.models import Evaluation, Job, ModelArtifact
from inference.workers import workers_online
from pipeline.jobs import datasets, dispatch, events, services, uploads
from pipeline.jobs.events import job_payload
from pipeline.jobs.kinds import KINDS
from pipeline.jobs.paths import JOB_FILES, job_files_dir, job_log_path
from sessions_app.validation import string_problem


def pipeline_refusal(user: Any, view: Any, method: str) -> str | None:
    """Why ``user`` may not call ``view`` with ``method``; None when they may. Staff only, and the
    model permission the view names for the method (``required_perms``), as the admin asks."""
    if not (user and user.is_authenticated and user.is_staff):
        return "The model pipeline is for staff."
    needed = getattr(view, "required_perms", {}).get(method)
    if needed and not user.has_perm(needed):
        return f"You need the permission {needed} to do this; ask an administrator."
    return None


class IsStaff(permissions.BasePermission):
    """Staff; for a write, also the model permission the view names (see the module's docstring)."""

    def has_permission(self, request: Request, view: Any) -> bool:
        refusal = pipeline_refusal(request.user, view, request.method or "")
        if refusal is not None:
            self.message = refusal  # DRF answers 403 with it (401 when not signed in)
            return False
        return True


def _jobs() -> QuerySet[Job]:
    return Job.objects.select_related("created_by").prefetch_related(
        Prefetch("artifacts", queryset=ModelArtifact.objects.only("id", "created_by_job_id"))
    )


_UPLOAD = {
    "multipart/form-data": inline_serializer(
        "DatasetUpload", {"file": serializers.FileField(), "name": serializers.CharField(required=False)}
    )
}


class StaffApi(APIView):
    permission_classes = [IsStaff]
    # method -> the Django permission a call needs beyond being staff
    required_perms: dict[str, str] = {}


class JobListApi(StaffApi):
    required_perms = {"POST": "inference.add_job"}

    @extend_schema(operation_id="jobs_list", responses=OpenApiTypes.OBJECT)
    def get(self, request: Request) -> Response:
        dispatch.embedded_recover()
        jobs = _jobs()
        if request.query_params.get("status"):
            jobs = jobs.filter(status=request.query_params["status"])
        if request.query_params.get("kind"):
            jobs = jobs.filter(kind=request.query_params["kind"])
        raw_limit = request.query_params.get("limit", "100")
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 500:
            return Response({"code": "invalid", "message": "limit: a whole number from 1 to 500"}, status=400)
        limit = int(raw_limit)
        return Response({"results": [job_payload(j) for j in jobs[:limit]]})

    @extend_schema(operation_id="jobs_create", request=OpenApiTypes.OBJECT, responses={201: OpenApiTypes.OBJECT})
    def post(self, request: Request) -> Response:
        data = request.data if isinstance(request.data, dict) else {}
        job = services.job_create(kind=data.get("kind", ""), params=data.get("params", {}), user=request.user)
        return Response(job_payload(job), status=status.HTTP_201_CREATED)


class JobDetailApi(StaffApi):
    @extend_schema(operation_id="jobs_retrieve", responses=OpenApiTypes.OBJECT)
    def get(self, request: Request, job_id: int) -> Response:
        dispatch.embedded_recover()
        return Response(job_payload(get_object_or_404(_jobs(), pk=job_id)))


class JobCancelApi(StaffApi):
    required_perms = {"POST": "inference.change_job"}

    @extend_schema(operation_id="jobs_cancel", request=None, responses=OpenApiTypes.OBJECT)
    def post(self, request: Request, job_id: int) -> Response:
        job = get_object_or_404(Job, pk=job_id)
        job = services.job_cancel(job)
        return Response(job_payload(job))


class JobRetryApi(StaffApi):
    """A new job with the same kind and parameters (``retry_of`` links it)."""

    start = staticmethod(services.job_retry)
    required_perms = {"POST": "inference.add_job"}

    @extend_schema(operation_id="jobs_retry", request=None, responses={201: OpenApiTypes.OBJECT})
    def post(self, request: Request, job_id: int) -> Response:
        job = get_object_or_404(Job, pk=job_id)
        new = self.start(job, user=request.user)
        return Response(job_payload(new), status=status.HTTP_201_CREATED)


@extend_schema_view(post=extend_schema(operation_id="jobs_resume"))
class JobResumeApi(JobRetryApi):
    """A new job going on from the last checkpoint of an ended (cancelled, failed) fine-tune."""

    start = staticmethod(services.job_resume)


class JobFileApi(StaffApi):
    """A file a job keeps in its own folder: a fine-tune's loss curve (``loss.png``, ``loss.json``), a
    benchmark's results (``bench.json``, ``bench.csv``, ``throughput.png``, ``ttft.png``)."""

    @extend_schema(operation_id="jobs_file", responses={(200, "application/octet-stream"): OpenApiTypes.BINARY})
    def get(self, request: Request, job_id: int, name: str) -> Any:
        job = get_object_or_404(Job, pk=job_id)
        path = job_files_dir(job.pk) / name
        if name not in JOB_FILES or not path.is_file():
            raise Http404("This job has no such file.")
        kinds = {".png": "image/png", ".csv": "text/csv; charset=utf-8"}
        kind = kinds.get(path.suffix, "application/json")
        response = FileResponse(path.open("rb"), content_type=kind)
        response["Cache-Control"] = "no-store"
        return response


class DatasetUploadApi(StaffApi):
    """``POST /api/datasets/``: a JSONL file of chats (multipart ``file``, optional ``name``), checked
    line by line as it arrives and stored as a dataset artifact for ``finetune_lora``
    (``pipeline.jobs.uploads``). A bad line answers 400 naming it, a file over
    ``DATASET_MAX_BYTES`` 413 (before the rest is read); either stores nothing. A name already
    taken gets the next free ``name (2)``."""

    parser_classes = [uploads.DatasetMultiPartParser]
    required_perms = {"POST": "inference.add_modelartifact"}

    def upload_refusal(self, user: Any) -> str | None:
        """Asked by the parser before it reads the body (see pipeline.jobs.uploads)."""
        return pipeline_refusal(user, self, "POST")

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, uploads.UploadError):  # raised while the body is read, even during authentication
            return Response(exc.body(), status=exc.status)
        return super().handle_exception(exc)

    @extend_schema(operation_id="datasets_upload", request=_UPLOAD, responses={201: OpenApiTypes.OBJECT})
    def post(self, request: Request) -> Response:
        upload = request.FILES.get(uploads.FIELD)
        if not isinstance(upload, uploads.CheckedUpload):
            return Response({"code": "invalid", "field": "file", "message": "file: attach a JSONL file"}, status=400)
        name = str(request.data.get("name") or upload.name or "upload.jsonl")
        # PostgreSQL refuses a NUL in text and cannot encode a lone surrogate: a 400 here, not a 500
        # when the row is written (the same check as the JSON doors').
        for field, text in (("name", name), ("file", upload.name or "")):
            problem = string_problem(text)
            if problem:
                upload.close()
                return Response({"code": "invalid", "field": field, "message": f"{field}: {problem}"}, status=400)
        details = {"source": "upload", "filename": upload.name, "user": request.user.username}
        artifact = datasets.dataset_register(upload.path, records=upload.records, name=name, details=details)
        events.artifacts_changed()
        return Response(artifact_payload(artifact), status=status.HTTP_201_CREATED)


class JobLogApi(StaffApi):
    """The whole log of a job, as plain text (the job row keeps only its tail). The file is found
    from the job's id (``job_log_path``), never from the row's ``log_path``: what a row says must
    not choose which file of the server is read out."""

    @extend_schema(operation_id="jobs_log", responses={(200, "text/plain"): OpenApiTypes.STR})
    def get(self, request: Request, job_id: int) -> Any:
        job = get_object_or_404(Job, pk=job_id)
        path = job_log_path(job.pk)
        if not path.is_file():
            raise Http404("This job's log is not on this machine.")
        return FileResponse(path.open("rb"), content_type="text/plain; charset=utf-8")


class JobKindsApi(StaffApi):
    """Each kind's parameters as JSON Schema (with defaults), the formats it takes, its queue."""

    @extend_schema(operation_id="job_kinds", responses=OpenApiTypes.OBJECT)
    def get(self, request: Request) -> Response:
        return Response(
            {
                name: {
                    "description": kind.description,
                    "queue": kind.queue,
                    "sources": list(kind.sources),
                    "schema": kind.params.model_json_schema(),
                }
                for name, kind in KINDS.items()
            }
        )


def evaluation_payload(e: Evaluation) -> dict[str, Any]:
    return {
        "id": e.pk, "job": e.job_id, "text": e.text, "perplexity": e.perplexity, "ppl_tokens": e.ppl_tokens,
        "size_bytes": e.size_bytes, "decode_tokens_per_s": e.decode_tokens_per_s,
        "prefill_tokens_per_s": e.prefill_tokens_per_s, "sample": e.sample,
        "created_at": e.created_at.isoformat(),
    }  # fmt: skip


def artifact_payload(a: ModelArtifact) -> dict[str, Any]:
    return {
        "id": a.pk,
        "name": a.name,
        "format": a.format,
        "quantization": a.quantization,
        "parent": a.parent_id,
        "job": a.created_by_job_id,
        "path": a.path,
        "url": a.url,
        "size_bytes": a.size_bytes,
        "context_length": a.context_length,
        "backend": backend_for_format(a.format),
        "details": a.details,
        "evaluations": [evaluation_payload(e) for e in a.evaluations.all()],
        "agents": [agent.pk for agent in a.agents.all()],
        "created_at": a.created_at.isoformat(),
    }


def _artifacts(user: Any) -> QuerySet[ModelArtifact]:
    """The shared artifacts and ``user``'s private ones (their chat snapshots): another user's is a 404."""
    return ModelArtifact.objects.visible_to(user).prefetch_related("evaluations", "agents").order_by("created_at", "id")


class ArtifactListApi(StaffApi):
    @extend_schema(operation_id="artifacts_list", responses=OpenApiTypes.OBJECT)
    def get(self, request: Request) -> Response:
        return Response({"results": [artifact_payload(a) for a in _artifacts(request.user)]})


class ArtifactDetailApi(StaffApi):
    @extend_schema(operation_id="artifacts_retrieve", responses=OpenApiTypes.OBJECT)
    def get(self, request: Request, artifact_id: int) -> Response:
        return Response(artifact_payload(get_object_or_404(_artifacts(request.user), pk=artifact_id)))


class WorkerListApi(StaffApi):
    """The workers online: queues, processes, memory, loaded and lately unloaded models, running
    tasks and jobs, last beat (see inference.workers)."""

    @extend_schema(operation_id="workers_list", responses=OpenApiTypes.OBJECT)
    def get(self, request: Request) -> Response:
        return Response({"results": workers_online()})
