"""The job runner's logic without models: validation, claim once, cancel, retry, reaper, API access.

The real kinds run end to end in tests/integration/test_jobs.py; here a kind's ``run`` is a
small function so that the runner's own rules are checked in milliseconds.
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from inference.models import Job, ModelArtifact
from pipeline.jobs import kinds, runner, services
from pipeline.jobs.reaper import jobs_reap

pytestmark = pytest.mark.usefixtures("no_dispatch")


@pytest.mark.parametrize(
    ("kind", "params", "field"),
    [
        ("quantize_gguf", {"type": "Q3_X"}, "params.type"),
        ("export_openvino", {"group_size": 0}, "params.group_size"),
        ("export_openvino", {"ratio": 0}, "params.ratio"),
        ("export_openvino", {"weight_format": "int2"}, "params.weight_format"),
        ("gptq", {"bits": 3}, "params.bits"),
        ("gptq", {"damp_percent": 2}, "params.damp_percent"),
        ("gptq", {"dataset": 12345}, "params.dataset"),
        ("quantize_rtn", {"bits": 16}, "params.bits"),
        ("quantize_rtn", {"colour": "red"}, "params.colour"),
        ("evaluate", {"max_tokens": 1}, "params.max_tokens"),
        ("convert", {}, "params.to"),
        ("convert", {"to": "gguf", "source": 999999}, "params.source"),
        ("quantize_gguf", {}, "params.source"),  # a Hugging Face artifact is not a GGUF
        ("convert", {"to": "hf"}, "params.source"),  # GGUF -> HF needs a GGUF
        ("nonsense", {}, "kind"),
    ],
)
def test_a_bad_parameter_is_refused_naming_it(
    hf_artifact: ModelArtifact, kind: str, params: dict, field: str, no_dispatch: list[int]
) -> None:
    with pytest.raises(services.JobError) as caught:
        services.job_create(kind=kind, params={"source": hf_artifact.pk, **params})
    assert caught.value.field == field
    assert Job.objects.count() == 0 and no_dispatch == []


def test_defaults_are_filled_in_and_the_job_is_queued_once(
    hf_artifact: ModelArtifact, no_dispatch: list[int], django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        job = services.job_create(kind="export_openvino", params={"source": hf_artifact.pk})
    assert job.params == {
        "source": hf_artifact.pk,
        "weight_format": "int4",
        "group_size": 64,
        "ratio": 1.0,
        "sym": False,
        "then": [],
    }
    assert job.status == Job.Status.QUEUED and job.queue == "jobs"
    assert no_dispatch == [job.pk]


def _fake_kind(monkeypatch: pytest.MonkeyPatch, run: Any) -> None:
    fake = kinds.Kind("quantize_rtn", kinds.QuantizeRTNParams, ("hf",), run, "test")
    monkeypatch.setitem(kinds.KINDS, "quantize_rtn", fake)
    monkeypatch.setattr(runner, "KINDS", kinds.KINDS)


def test_a_job_runs_once_and_its_artifact_names_its_parent_and_job(
    hf_artifact: ModelArtifact, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    def run(ctx: runner.JobContext, params: Any) -> list[kinds.Output]:
        (ctx.workdir / "rtn").mkdir(parents=True)
        (ctx.workdir / "rtn" / "weights.bin").write_bytes(b"x" * 1000)
        ctx.progress(50, "half way")
        return [kinds.Output("rtn", "rtn", f"RTN int{params.bits}", f"RTN int{params.bits}")]

    _fake_kind(monkeypatch, run)
    job = services.job_create(kind="quantize_rtn", params={"source": hf_artifact.pk})
    assert runner.job_run(job.pk, worker="w1") is True
    job.refresh_from_db()
    assert (job.status, job.progress, job.worker) == (Job.Status.SUCCEEDED, 100.0, "w1")
    made = job.artifacts.get()
    assert (made.parent, made.format, made.size_bytes, made.context_length) == (hf_artifact, "rtn", 1000, 2048)
    assert Path(made.path).parent == Path(settings.ARTIFACT_ROOT) / f"job-{job.pk}-quantize_rtn"
    assert not runner.partial_dir(job.pk).exists()
    assert "claimed by w1" in Path(job.log_path).read_text()
    finished_at = job.finished_at
    # A second delivery of the same task finds nothing to claim and changes nothing.
    assert runner.job_run(job.pk, worker="w2") is False
    job.refresh_from_db()
    assert (job.worker, job.finished_at, job.artifacts.count()) == ("w1", finished_at, 1)


def test_a_failing_job_keeps_its_error_and_leaves_no_partial_files(
    hf_artifact: ModelArtifact, monkeypatch: pytest.MonkeyPatch
) -> None:
    def run(ctx: runner.JobContext, params: Any) -> list[kinds.Output]:
        ctx.workdir.mkdir(parents=True)
        (ctx.workdir / "half.bin").write_bytes(b"x")
        raise runner.JobFailed("the disk is full")

    _fake_kind(monkeypatch, run)
    job = services.job_create(kind="quantize_rtn", params={"source": hf_artifact.pk})
    runner.job_run(job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED and job.error == "the disk is full"
    assert not runner.partial_dir(job.pk).exists() and not job.artifacts.exists()


def _locked_retry(call: Any) -> Any:
    """The test database is SQLite in memory with a shared cache, where a write by the job's
    heartbeat thread makes another connection's statement fail at once ("database table is
    locked") instead of waiting as a file database does: try again for a few seconds."""
    from django.db import OperationalError

    for _ in range(100):
        try:
            return call()
        except OperationalError:
            time.sleep(0.05)
    return call()


@pytest.mark.django_db(transaction=True)
def test_a_cancel_reaches_a_running_step_and_ends_its_process_group(
    hf_artifact: ModelArtifact, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    import sys
    import threading

    # A stand-in "environment" whose python ignores its arguments and sleeps: a blocking step.
    fake_python = Path(settings.ARTIFACT_ROOT).parent / "sleepy-python"
    fake_python.write_text(f"#!/bin/sh\nexec {sys.executable} -c 'import time; time.sleep(60)'\n")
    fake_python.chmod(0o755)
    settings.JOB_PYTHONS = {"main": str(fake_python)}
    settings.JOB_KILL_GRACE_SECONDS = 1.0
    seen: dict[str, Any] = {}

    def run(ctx: runner.JobContext, params: Any) -> list[kinds.Output]:
        ctx.step("quantize_rtn", {"source": ctx.source.path}, span=(0, 100))
        return []

    _fake_kind(monkeypatch, run)
    job = services.job_create(kind="quantize_rtn", params={"source": hf_artifact.pk})
    thread = threading.Thread(target=lambda: seen.setdefault("claimed", runner.job_run(job.pk)))
    thread.start()
    deadline = timezone.now() + timedelta(seconds=20)
    while not _locked_retry(lambda: Job.objects.filter(pk=job.pk, status=Job.Status.RUNNING).exists()):
        assert timezone.now() < deadline, "the job was never claimed"
        time.sleep(0.05)
    _locked_retry(lambda: services.job_cancel(Job.objects.get(pk=job.pk)))
    thread.join(timeout=20)
    assert not thread.is_alive(), "the cancelled step did not end"
    job.refresh_from_db()
    assert job.status == Job.Status.CANCELLED and job.error == "Cancelled."


def test_cancel_and_retry_rules(hf_artifact: ModelArtifact, no_dispatch: list[int]) -> None:
    job = services.job_create(kind="quantize_rtn", params={"source": hf_artifact.pk})
    services.job_cancel(job)
    assert job.status == Job.Status.CANCELLED  # a queued job is cancelled at once
    assert runner.job_run(job.pk) is False  # and its task, when it arrives, does nothing
    with pytest.raises(services.JobError) as caught:
        services.job_cancel(job)
    assert caught.value.status == 409
    retry = services.job_retry(job)
    assert (retry.retry_of, retry.params, retry.status) == (job, job.params, Job.Status.QUEUED)
    with pytest.raises(services.JobError):
        services.job_retry(retry)  # still queued


def test_the_reaper_interrupts_only_jobs_whose_heartbeat_lapsed(hf_artifact: ModelArtifact, settings: Any) -> None:
    now = timezone.now()
    dead = Job.objects.create(
        kind="evaluate", status=Job.Status.RUNNING, worker="w@gone (host:1)",
        heartbeat_at=now - timedelta(seconds=120), started_at=now - timedelta(seconds=200),
    )  # fmt: skip
    alive = Job.objects.create(kind="evaluate", status=Job.Status.RUNNING, heartbeat_at=now, started_at=now)
    runner.partial_dir(dead.pk).mkdir(parents=True)
    assert jobs_reap(stale_seconds=30) == 1
    dead.refresh_from_db()
    alive.refresh_from_db()
    assert dead.status == Job.Status.INTERRUPTED and "w@gone" in dead.error and dead.finished_at
    assert alive.status == Job.Status.RUNNING
    assert not runner.partial_dir(dead.pk).exists()


def test_eta_follows_the_pace_so_far(db: Any) -> None:
    now = timezone.now()
    job = Job(kind="evaluate", status=Job.Status.RUNNING, progress=25.0, started_at=now - timedelta(seconds=30))
    assert job.eta_seconds() == pytest.approx(90, abs=1)
    job.progress = 0.5
    assert job.eta_seconds() is None


def test_jobs_api_is_for_staff_only(
    api: APIClient, anon_api: APIClient, staff_api: APIClient, hf_artifact: ModelArtifact
) -> None:
    body = {"kind": "quantize_rtn", "params": {"source": hf_artifact.pk}}
    assert anon_api.get("/api/jobs/").status_code == 401
    assert api.get("/api/jobs/").status_code == 403
    assert api.post("/api/jobs/", body, format="json").status_code == 403
    assert api.get("/api/artifacts/").status_code == 403
    created = staff_api.post("/api/jobs/", body, format="json")
    assert created.status_code == 201, created.json()
    assert created.json()["params"]["bits"] == 8
    bad = staff_api.post("/api/jobs/", {"kind": "quantize_rtn", "params": {"source": hf_artifact.pk, "bits": 3}},
                         format="json")  # fmt: skip
    assert bad.status_code == 400 and bad.json()["field"] == "params.bits"
    assert "params.bits" in bad.json()["message"]
    kinds_ = staff_api.get("/api/jobs/kinds/").json()
    assert kinds_["export_openvino"]["schema"]["properties"]["group_size"]["default"] == 64
    assert staff_api.get(f"/api/jobs/{created.json()['id']}/").json()["status"] == "queued"
    assert [j["id"] for j in staff_api.get("/api/jobs/").json()["results"]] == [created.json()["id"]]
    assert staff_api.get("/api/jobs/?limit=lots").status_code == 400
    assert staff_api.get("/api/jobs/999999/").status_code == 404


def test_an_agent_is_made_from_an_artifact_on_the_backend_for_its_format(
    staff_api: APIClient, gguf_artifact: ModelArtifact, hf_artifact: ModelArtifact, tmp_path: Path
) -> None:
    made = staff_api.post("/api/agents/", {"name": "Q", "slug": "q", "model": gguf_artifact.pk}, format="json")
    assert made.status_code == 201, made.json()
    assert made.json()["backend"] == "llama_cpp"
    assert staff_api.post("/api/agents/", {"name": "H", "slug": "h", "model": hf_artifact.pk},
                          format="json").json()["backend"] == "vllm"  # fmt: skip
    rtn = ModelArtifact.objects.create(name="rtn", format="rtn", path=str(tmp_path))
    refused = staff_api.post("/api/agents/", {"name": "R", "slug": "r", "model": rtn.pk}, format="json")
    assert refused.status_code == 400 and "model" in refused.json()["errors"]


def test_the_job_list_reads_a_fixed_number_of_queries(
    staff_api: APIClient, hf_artifact: ModelArtifact, django_assert_max_num_queries: Any
) -> None:
    for _ in range(20):
        services.job_create(kind="quantize_rtn", params={"source": hf_artifact.pk})
    with django_assert_max_num_queries(8):
        assert len(staff_api.get("/api/jobs/").json()["results"]) == 20
