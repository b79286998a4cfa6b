"""The model pipeline's doors (issue 21): what a staff user may do through the API and the admin.

- a job's log is found from its id, never from the path its row names;
- the Job admin writes nothing the runner owns and adds no job;
- staff change agents and jobs only with Django's model permissions, as in the admin;
- a dataset upload is bounded and checked while its body is read, and leaves no file behind.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.forms.models import model_to_dict
from django.test import Client
from django.test.client import FakePayload
from rest_framework.test import APIClient

from agents.models import Agent
from inference.models import Job, ModelArtifact
from pipeline.jobs import dispatch, runner
from pipeline.jobs.paths import job_log_path
from tests.conftest import _client_for, grant

GOOD = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}


@pytest.fixture(autouse=True)
def artifact_root(settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Files under a temporary root; jobs recorded, never run."""
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    monkeypatch.setattr(dispatch, "job_enqueue", lambda job: None)
    monkeypatch.setattr(dispatch, "embedded_recover", lambda: None)
    return Path(settings.ARTIFACT_ROOT)


@pytest.fixture
def bare_staff(db: Any) -> User:
    """Staff, without any model permission."""
    return User.objects.create_user("bart", password="bart-password-1", is_staff=True)


@pytest.fixture
def bare_api(bare_staff: User) -> APIClient:
    return _client_for(bare_staff)


@pytest.fixture
def root_api(superuser: User) -> APIClient:
    return _client_for(superuser)


@pytest.fixture
def hf(db: Any, tmp_path: Path) -> ModelArtifact:
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    return ModelArtifact.objects.create(name="tiny HF", format="hf", path=str(folder))


def jsonl_file(text: str, name: str = "chats.jsonl") -> io.BytesIO:
    up = io.BytesIO(text.encode())
    up.name = name
    return up


def files_in(root: Path) -> list[str]:
    """Every file under the artifact root's datasets folder (temporary ones included)."""
    folder = root / "datasets"
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


class CountingPayload(FakePayload):
    """A request body that counts the bytes the server read of it."""

    def __init__(self, content: bytes) -> None:
        super().__init__(content)
        self.bytes_read = 0

    def read(self, size: int = -1) -> bytes:
        chunk = super().read(size)
        self.bytes_read += len(chunk)
        return chunk

    def readline(self, size: int | None = -1) -> bytes:
        chunk = super().readline(size)
        self.bytes_read += len(chunk)
        return chunk


def multipart(file_bytes: bytes, boundary: str = "XyZzY", name: str | None = None) -> bytes:
    parts = [f"--{boundary}\r\n".encode(),
             b'Content-Disposition: form-data; name="file"; filename="chats.jsonl"\r\n',
             b"Content-Type: application/jsonl\r\n\r\n", file_bytes, b"\r\n"]  # fmt: skip
    if name is not None:
        parts += [f'--{boundary}\r\nContent-Disposition: form-data; name="name"\r\n\r\n{name}\r\n'.encode()]
    return b"".join([*parts, f"--{boundary}--\r\n".encode()])


def post_raw(client: APIClient, body: CountingPayload, length: int, boundary: str = "XyZzY", **extra: str) -> Any:
    """POST /api/datasets/ with ``body`` as the request stream and ``length`` as its Content-Length."""
    return client.generic("POST", "/api/datasets/", b"", content_type=f"multipart/form-data; boundary={boundary}",
                          CONTENT_LENGTH=str(length), **{"wsgi.input": body}, **extra)  # fmt: skip


# --------------------------------------------------------------------------- 1. the job log


def test_the_log_is_read_from_the_jobs_own_file_never_from_the_path_its_row_names(staff_api: APIClient) -> None:
    settings_py = Path(django_settings.BASE_DIR) / "chatsite" / "settings.py"
    job = Job.objects.create(kind="convert", params={"source": 1}, status="failed", log_path=str(settings_py))
    refused = staff_api.get(f"/api/jobs/{job.pk}/log/")
    assert refused.status_code == 404
    assert b"SECRET_KEY" not in b"".join(getattr(refused, "streaming_content", [refused.content]))

    # The runner writes where the API reads, whatever the row says.
    assert runner.log_path(job.pk) == job_log_path(job.pk)
    runner.log_path(job.pk).write_text("12:00:00 job claimed by w1\n")
    served = staff_api.get(f"/api/jobs/{job.pk}/log/")
    assert served.status_code == 200
    assert b"".join(served.streaming_content) == b"12:00:00 job claimed by w1\n"  # type: ignore[attr-defined]


def test_the_job_admin_changes_nothing_the_runner_owns_and_adds_no_job(
    bare_staff: User, superuser: User, hf: ModelArtifact
) -> None:
    job = Job.objects.create(kind="quantize_rtn", params={"source": hf.pk, "bits": 8}, queue="jobs")
    before = model_to_dict(job)
    operator = grant(bare_staff, "view_job", "change_job")
    client = Client()
    client.force_login(operator)
    url = f"/admin/inference/job/{job.pk}/change/"
    assert client.get(url).status_code == 200
    # Every field the model has, as the old form took them, with what an attacker would write.
    form: dict[str, Any] = {}
    for field, value in before.items():
        if isinstance(value, dict | list):
            form[field] = json.dumps(value)
        elif isinstance(value, bool):
            if value:
                form[field] = "on"
        elif value is not None:
            form[field] = str(value)
    form.update(log_path="/proc/self/environ", status="succeeded", progress="100", stage="done",
                params=json.dumps({"source": hf.pk, "input": "/etc/passwd"}), queue="celery",
                result=json.dumps({"artifacts": [1]}), worker="me", _save="Save")  # fmt: skip
    client.post(url, form)
    assert model_to_dict(Job.objects.get(pk=job.pk)) == before

    # No add page, even for a superuser: a job is made by job_create only.
    client.force_login(superuser)
    assert client.get("/admin/inference/job/add/").status_code == 403
    assert client.post("/admin/inference/job/add/", {"kind": "convert", "params": "{}", "status": "queued",
                                                      "progress": "0", "queue": "jobs"}).status_code == 403  # fmt: skip
    assert Job.objects.count() == 1

    # What the admin may do to a job goes through the services: cancelling it.
    changelist = "/admin/inference/job/"
    client.post(changelist, {"action": "cancel_jobs", "_selected_action": [job.pk]})
    assert Job.objects.get(pk=job.pk).status == "cancelled"


# --------------------------------------------------------------------------- 2. model permissions


def test_staff_change_agents_only_with_the_model_permission(
    bare_api: APIClient, bare_staff: User, user: User, agent: Agent
) -> None:
    assert [a["slug"] for a in bare_api.get("/api/agents/").json()["results"]] == ["helper"]
    assert bare_api.get("/api/agents/helper/").status_code == 200
    made = bare_api.post("/api/agents/", {"name": "Q", "slug": "q", "model": agent.model_id}, format="json")
    assert made.status_code == 403 and "agents.add_agent" in made.json()["message"]
    changed = bare_api.patch("/api/agents/helper/", {"name": "Pwned"}, format="json")
    assert changed.status_code == 403 and "agents.change_agent" in changed.json()["message"]
    deleted = bare_api.delete("/api/agents/helper/")
    assert deleted.status_code == 403 and "agents.delete_agent" in deleted.json()["message"]
    assert list(Agent.objects.values_list("slug", "name")) == [("helper", "Helper")]

    grant(bare_staff, "add_agent")
    assert bare_api.post("/api/agents/", {"name": "Q", "slug": "q", "model": agent.model_id},
                         format="json").status_code == 201  # fmt: skip
    assert bare_api.patch("/api/agents/helper/", {"name": "Pwned"}, format="json").status_code == 403
    grant(bare_staff, "change_agent", "delete_agent")
    assert bare_api.patch("/api/agents/helper/", {"name": "Renamed"}, format="json").status_code == 200
    assert bare_api.delete("/api/agents/q/").status_code == 204

    # The permission without being staff is not enough, as in the admin.
    client = _client_for(grant(user, "add_agent", "change_agent"))
    assert client.post("/api/agents/", {"name": "Z", "slug": "z"}, format="json").status_code == 403
    assert client.patch("/api/agents/helper/", {"name": "Pwned"}, format="json").status_code == 403
    assert Agent.objects.get(slug="helper").name == "Renamed"


def test_staff_start_and_cancel_jobs_and_upload_only_with_the_model_permissions(
    bare_api: APIClient, bare_staff: User, root_api: APIClient, hf: ModelArtifact, artifact_root: Path
) -> None:
    body = {"kind": "quantize_rtn", "params": {"source": hf.pk}}
    ended = Job.objects.create(kind="quantize_rtn", params={"source": hf.pk, "bits": 8}, status="failed")
    queued = Job.objects.create(kind="quantize_rtn", params={"source": hf.pk, "bits": 8})
    # Reading stays open to staff.
    assert bare_api.get("/api/jobs/").status_code == 200
    assert bare_api.get(f"/api/jobs/{queued.pk}/").status_code == 200
    assert bare_api.get("/api/artifacts/").status_code == 200
    assert bare_api.get("/api/jobs/kinds/").status_code == 200
    # Changing needs the permission, named in the answer.
    for path, perm in [("/api/jobs/", "inference.add_job"), (f"/api/jobs/{ended.pk}/retry/", "inference.add_job"),
                       (f"/api/jobs/{ended.pk}/resume/", "inference.add_job"),
                       (f"/api/jobs/{queued.pk}/cancel/", "inference.change_job")]:  # fmt: skip
        refused = bare_api.post(path, body, format="json")
        assert refused.status_code == 403, (path, refused.content)
        assert refused.json()["code"] == "permission_denied" and perm in refused.json()["message"], path
    upload = bare_api.post("/api/datasets/", {"file": jsonl_file(json.dumps(GOOD))}, format="multipart")
    assert upload.status_code == 403 and "inference.add_modelartifact" in upload.json()["message"]
    assert Job.objects.count() == 2 and Job.objects.get(pk=queued.pk).status == "queued"
    assert not ModelArtifact.objects.filter(format="dataset").exists() and files_in(artifact_root) == []

    grant(bare_staff, "add_job")
    assert bare_api.post("/api/jobs/", body, format="json").status_code == 201
    assert bare_api.post(f"/api/jobs/{ended.pk}/retry/").status_code == 201
    assert bare_api.post(f"/api/jobs/{queued.pk}/cancel/").status_code == 403
    # A superuser holds every permission.
    assert root_api.post(f"/api/jobs/{queued.pk}/cancel/").json()["status"] == "cancelled"
    assert (
        root_api.post("/api/datasets/", {"file": jsonl_file(json.dumps(GOOD))}, format="multipart").status_code == 201
    )


def test_a_browser_upload_without_the_permission_is_refused_before_its_body_is_read(
    bare_staff: User, artifact_root: Path
) -> None:
    """A signed-in browser's CSRF check reads the form before the view's permission check: the
    upload parser asks the permission itself, first."""
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(bare_staff)
    client.cookies[django_settings.CSRF_COOKIE_NAME] = "a" * 32  # Django reads the form once it has a cookie
    content = multipart(json.dumps(GOOD).encode() + b"\n" * 100_000)
    body = CountingPayload(content)
    refused = post_raw(client, body, len(content))
    assert refused.status_code == 403 and "inference.add_modelartifact" in refused.json()["message"]
    assert body.bytes_read == 0
    assert files_in(artifact_root) == []
    # With the permission (and the page's CSRF token), the same upload is stored.
    grant(bare_staff, "add_modelartifact")
    made = post_raw(client, CountingPayload(content), len(content), HTTP_X_CSRFTOKEN="a" * 32)
    assert made.status_code == 201, made.content
    assert files_in(artifact_root) == [Path(made.json()["path"]).name]


# --------------------------------------------------------------------------- 3. bounded uploads


def test_an_upload_over_the_limit_is_refused_while_it_is_read_and_nothing_is_stored(
    staff_api: APIClient, settings: Any, artifact_root: Path
) -> None:
    settings.DATASET_MAX_BYTES = 1024
    # A Content-Length that cannot fit: 413 before a byte of the body is read.
    body = CountingPayload(multipart(b"x" * 100))
    refused = post_raw(staff_api, body, 50 * 1024 * 1024)
    assert refused.status_code == 413
    assert refused.json() == {"code": "too_large", "field": "file", "message": "file: larger than 1024 bytes"}
    assert body.bytes_read == 0
    # A body within the Content-Length allowance whose file is over: 413 from the handler's count.
    text = "\n".join([json.dumps(GOOD)] * 120)  # about 10 KiB
    refused = staff_api.post("/api/datasets/", {"file": jsonl_file(text)}, format="multipart")
    assert refused.status_code == 413 and refused.json()["code"] == "too_large", refused.content
    assert not ModelArtifact.objects.exists() and files_in(artifact_root) == []
    # Within the limit is taken.
    small = "\n".join([json.dumps(GOOD)] * 10)
    assert len(small) <= 1024
    assert staff_api.post("/api/datasets/", {"file": jsonl_file(small)}, format="multipart").status_code == 201


def test_a_bad_line_is_answered_at_once_naming_it_and_leaves_no_file(staff_api: APIClient, artifact_root: Path) -> None:
    # The bad line comes first; 4 MB follow it, which the server never needs to read.
    content = multipart(b'{"messages": [{"role": "user", "content": "Hi"}]}\n' + (json.dumps(GOOD).encode() + b"\n")
                        * 50_000)  # fmt: skip
    body = CountingPayload(content)
    refused = post_raw(staff_api, body, len(content))
    assert refused.status_code == 400, refused.content
    answer = refused.json()
    assert (answer["code"], answer["field"], answer["line"]) == ("invalid_dataset", "file", 1)
    assert answer["message"].startswith("file: line 1: the last message must be the assistant's")
    assert body.bytes_read < len(content) // 10
    assert not ModelArtifact.objects.exists() and files_in(artifact_root) == []

    third = "\n".join([json.dumps(GOOD), json.dumps(GOOD), "{not json"])
    refused = staff_api.post("/api/datasets/", {"file": jsonl_file(third)}, format="multipart")
    assert refused.status_code == 400 and refused.json()["line"] == 3
    assert files_in(artifact_root) == []


# --------------------------------------------------------------------------- 4. unique names


def test_a_second_upload_with_the_same_name_gets_the_next_free_name(staff_api: APIClient, artifact_root: Path) -> None:
    made = [staff_api.post("/api/datasets/", {"file": jsonl_file(json.dumps(GOOD)), "name": "support chats"},
                           format="multipart") for _ in range(3)]  # fmt: skip
    assert [r.status_code for r in made] == [201, 201, 201], made[-1].content
    assert [r.json()["name"] for r in made] == ["support chats", "support chats (2)", "support chats (3)"]
    paths = {r.json()["path"] for r in made}
    assert len(paths) == 3 and all(Path(p).is_file() for p in paths)
    assert files_in(artifact_root) == sorted(Path(p).name for p in paths)  # nothing else: no temporary file


def test_a_dataset_name_with_a_nul_is_a_400_naming_it(staff_api: APIClient, artifact_root: Path) -> None:
    """PostgreSQL refuses a NUL in text: a 400 before the row is written. (A multipart body is bytes
    decoded as UTF-8, so a lone surrogate cannot arrive this way.)"""
    body = {"file": jsonl_file(json.dumps(GOOD)), "name": "chats\x00"}
    made = staff_api.post("/api/datasets/", body, format="multipart")
    assert made.status_code == 400, made.content
    assert made.json()["field"] == "name"
    assert not ModelArtifact.objects.filter(format=ModelArtifact.Format.DATASET).exists()
    assert files_in(artifact_root) == []
