"""REST API of the model pipeline (staff only): jobs, artifacts, workers.

``POST /api/jobs/`` ``{"kind", "params"}`` starts a job (``params.source`` is the input artifact's
id); a bad value answers 400 naming it (``params.type``). Other users get 403, anonymous 401.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.db.models import Prefetch, QuerySet
from django.http import FileResponse, Http404
from django.shortcuts import get_object_or_404
from rest_framework import permissions, status
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from inference.backends.registry import backend_for_format
from inference.jobs import datasets, dispatch, services
from inference.jobs.base import JOB_FILES, job_files_dir
from inference.jobs.events import job_payload
from inference.jobs.kinds import KINDS
from inference.models import Evaluation, Job, ModelArtifact
from inference.workers import workers_online


class IsStaff(permissions.BasePermission):
    def has_permission(self, request: Request, view: Any) -> bool:
        return bool(request.user and request.user.is_authenticated and request.user.is_staff)


def _error(exc: services.JobError) -> Response:
    body: dict[str, Any] = {"code": exc.code, "message": f"{exc.field}: {exc.message}" if exc.field else exc.message}
    if exc.field:
        body["field"] = exc.field
        body["errors"] = {exc.field: [exc.message]}
    return Response(body, status=exc.status)


def _jobs() -> QuerySet[Job]:
    return Job.objects.select_related("created_by").prefetch_related(
        Prefetch("artifacts", queryset=ModelArtifact.objects.only("id", "created_by_job_id"))
    )


class StaffApi(APIView):
    permission_classes = [IsStaff]


class JobListApi(StaffApi):
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

    def post(self, request: Request) -> Response:
        data = request.data if isinstance(request.data, dict) else {}
        try:
            job = services.job_create(kind=data.get("kind", ""), params=data.get("params", {}), user=request.user)
        except services.JobError as exc:
            return _error(exc)
        return Response(job_payload(job), status=status.HTTP_201_CREATED)


class JobDetailApi(StaffApi):
    def get(self, request: Request, job_id: int) -> Response:
        dispatch.embedded_recover()
        return Response(job_payload(get_object_or_404(_jobs(), pk=job_id)))


class JobCancelApi(StaffApi):
    def post(self, request: Request, job_id: int) -> Response:
        job = get_object_or_404(Job, pk=job_id)
        try:
            job = services.job_cancel(job)
        except services.JobError as exc:
            return _error(exc)
        return Response(job_payload(job))


class JobRetryApi(StaffApi):
    """A new job with the same kind and parameters (``retry_of`` links it)."""

    start = staticmethod(services.job_retry)

    def post(self, request: Request, job_id: int) -> Response:
        job = get_object_or_404(Job, pk=job_id)
        try:
            new = self.start(job, user=request.user)
        except services.JobError as exc:
            return _error(exc)
        return Response(job_payload(new), status=status.HTTP_201_CREATED)


class JobResumeApi(JobRetryApi):
    """A new job going on from the last checkpoint of an ended (cancelled, failed) fine-tune."""

    start = staticmethod(services.job_resume)


class JobFileApi(StaffApi):
    """A file a job keeps in its own folder: a fine-tune's loss curve (``loss.png``, ``loss.json``), a
    benchmark's results (``bench.json``, ``bench.csv``, ``throughput.png``, ``ttft.png``)."""

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
    line by line, stored as a dataset artifact for ``finetune_lora``. A bad line answers 400 naming
    it and stores nothing."""

    parser_classes = [MultiPartParser, FormParser, JSONParser]

    def post(self, request: Request) -> Response:
        upload = request.FILES.get("file")
        if upload is None:
            return Response({"code": "invalid", "field": "file", "message": "file: attach a JSONL file"}, status=400)
        if upload.size > settings.DATASET_MAX_BYTES:
            message = f"file: larger than {settings.DATASET_MAX_BYTES} bytes"
            return Response({"code": "too_large", "field": "file", "message": message}, status=413)
        try:
            records = datasets.records_parse(upload)
        except datasets.DatasetError as exc:
            body: dict[str, Any] = {"code": "invalid_dataset", "field": "file", "message": f"file: {exc}"}
            if exc.line:
                body["line"] = exc.line
            return Response(body, status=400)
        name = str(request.data.get("name") or upload.name or "upload.jsonl")[:200]
        artifact = datasets.dataset_save(
            records, name=name, details={"source": "upload", "filename": upload.name, "user": request.user.username}
        )
        from inference.jobs import events

        events.artifacts_changed()
        return Response(artifact_payload(artifact), status=status.HTTP_201_CREATED)


class JobLogApi(StaffApi):
    """The whole log of a job, as plain text (the job row keeps only its tail)."""

    def get(self, request: Request, job_id: int) -> Any:
        job = get_object_or_404(Job, pk=job_id)
        path = Path(job.log_path) if job.log_path else None
        if path is None or not path.is_file():
            raise Http404("This job's log is not on this machine.")
        return FileResponse(path.open("rb"), content_type="text/plain; charset=utf-8")


class JobKindsApi(StaffApi):
    """Each kind's parameters as JSON Schema (with defaults), the formats it takes, its queue."""

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


def _artifacts() -> QuerySet[ModelArtifact]:
    return ModelArtifact.objects.prefetch_related("evaluations", "agents").order_by("created_at", "id")


class ArtifactListApi(StaffApi):
    def get(self, request: Request) -> Response:
        return Response({"results": [artifact_payload(a) for a in _artifacts()]})


class ArtifactDetailApi(StaffApi):
    def get(self, request: Request, artifact_id: int) -> Response:
        return Response(artifact_payload(get_object_or_404(_artifacts(), pk=artifact_id)))


class WorkerListApi(StaffApi):
    """The workers online: queues, processes, memory, loaded and lately unloaded models, running
    tasks and jobs, last beat (see inference.workers)."""

    def get(self, request: Request) -> Response:
        return Response({"results": workers_online()})
