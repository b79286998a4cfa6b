"""A fine-tune on a user's sessions or compare picks copies their chats into a dataset artifact
that is that user's alone: no other staff user lists it, reads it or starts a job on it, and the
job's payload carries none of the chats. Two fine-tunes on the same chats make two snapshots."""

from __future__ import annotations

import importlib
import json
from typing import Any

import pytest
from django.apps import apps
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from agents.models import Agent
from inference.models import Job, ModelArtifact
from pipeline.jobs import datasets
from sessions_app.models import Message, Pick, Session
from tests.conftest import PIPELINE_PERMISSIONS, grant

pytestmark = pytest.mark.usefixtures("no_dispatch")

SECRET = "the merger closes on the ninth"


@pytest.fixture
def helper_agent(db: Any) -> Agent:
    return Agent.objects.create(name="Helper", slug="helper", system_prompt="Be brief.")


@pytest.fixture
def other_staff(db: Any) -> User:
    """A second staff operator, with the same permissions as ``staff``."""
    return grant(User.objects.create_user("oscar", password="oscar-password-1", is_staff=True), *PIPELINE_PERMISSIONS)


def _client(user: User) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def _chat(owner: User, agent: Agent) -> Session:
    session = Session.objects.create(owner=owner, agent=agent)
    Message.objects.create(session=session, role="user", content=f"Remember: {SECRET}.", status="complete")
    Message.objects.create(session=session, role="assistant", content="Noted.", status="complete", agent=agent)
    return session


def _pick(owner: User, agent: Agent) -> None:
    """One compare pick: a user message, two replies, the first chosen."""
    other = Agent.objects.create(name="Rival", slug="rival")
    session = Session.objects.create(owner=owner, agent=agent)
    asked = Message.objects.create(session=session, role="user", content=f"About {SECRET}?", status="complete")
    chosen = Message.objects.create(session=session, role="assistant", content="Yes.", status="complete",
                                    agent=agent, reply_to=asked)  # fmt: skip
    Message.objects.create(session=session, role="assistant", content="No.", status="complete", agent=other,
                           reply_to=asked)  # fmt: skip
    Pick.objects.create(user_message=asked, winner=chosen)


def _finetune(client: APIClient, source: ModelArtifact, **params: Any) -> Any:
    return client.post("/api/jobs/", {"kind": "finetune_lora", "params": {"source": source.pk, **params}},
                       format="json")  # fmt: skip


def test_a_chat_snapshot_is_its_owners_alone(
    staff: User, other_staff: User, helper_agent: Agent, hf_artifact: ModelArtifact
) -> None:
    owner, other = _client(staff), _client(other_staff)
    made = _finetune(owner, hf_artifact, sessions=[_chat(staff, helper_agent).pk])
    assert made.status_code == 201, made.json()
    (snapshot_id,) = made.json()["params"]["datasets"]
    snapshot = ModelArtifact.objects.get(pk=snapshot_id)
    assert snapshot.owner == staff and SECRET in json.dumps(datasets.records_read(snapshot.path))

    # The owner lists and reads it; another staff user neither sees it nor learns it exists.
    assert snapshot_id in [a["id"] for a in owner.get("/api/artifacts/").json()["results"]]
    assert owner.get(f"/api/artifacts/{snapshot_id}/").status_code == 200
    listed = other.get("/api/artifacts/").json()["results"]
    assert snapshot_id not in [a["id"] for a in listed] and hf_artifact.pk in [a["id"] for a in listed]
    assert other.get(f"/api/artifacts/{snapshot_id}/").status_code == 404

    # Nor can they train on it: by naming it, or by retrying or resuming the owner's job.
    before = Job.objects.count()
    refused = _finetune(other, hf_artifact, datasets=[snapshot_id])
    assert refused.status_code == 400 and refused.json()["field"] == "params.datasets.0", refused.json()
    Job.objects.filter(pk=made.json()["id"]).update(status=Job.Status.FAILED)
    retried = other.post(f"/api/jobs/{made.json()['id']}/retry/")
    assert retried.status_code == 400 and retried.json()["field"] == "params.datasets.0", retried.json()
    gptq = other.post("/api/jobs/", {"kind": "gptq", "params": {"source": hf_artifact.pk, "dataset": snapshot_id}},
                      format="json")  # fmt: skip
    assert gptq.status_code == 400 and gptq.json()["field"] == "params.dataset", gptq.json()
    assert Job.objects.count() == before
    # The owner can retry their own job.
    assert owner.post(f"/api/jobs/{made.json()['id']}/retry/").status_code == 201

    # What every staff user sees of the job (list, detail, the dashboard's events) holds no chat.
    for path in ("/api/jobs/", f"/api/jobs/{made.json()['id']}/"):
        assert SECRET not in other.get(path).content.decode()


def test_compare_picks_are_snapshotted_for_their_user_only(
    staff: User, other_staff: User, helper_agent: Agent, hf_artifact: ModelArtifact
) -> None:
    _pick(staff, helper_agent)
    made = _finetune(_client(staff), hf_artifact, preferences=True)
    assert made.status_code == 201, made.json()
    (snapshot_id,) = made.json()["params"]["datasets"]
    assert ModelArtifact.objects.get(pk=snapshot_id).owner == staff
    assert _client(other_staff).get(f"/api/artifacts/{snapshot_id}/").status_code == 404


def test_two_finetunes_on_the_same_chats_each_get_their_snapshot(
    staff: User, helper_agent: Agent, hf_artifact: ModelArtifact
) -> None:
    client = _client(staff)
    session = _chat(staff, helper_agent)
    _pick(staff, helper_agent)
    made = [_finetune(client, hf_artifact, sessions=[session.pk], preferences=True) for _ in range(2)]
    assert [m.status_code for m in made] == [201, 201], [m.json() for m in made]
    first, second = (m.json()["params"]["datasets"] for m in made)
    assert len(first) == len(second) == 2 and not set(first) & set(second)
    snapshots = ModelArtifact.objects.filter(pk__in=[*first, *second])
    assert snapshots.count() == 4 and len({a.name for a in snapshots}) == 4 and len({a.path for a in snapshots}) == 4
    assert all(a.owner == staff for a in snapshots)


def test_snapshots_made_before_owners_existed_become_their_users(staff: User, tmp_path: Any) -> None:
    migration = importlib.import_module("inference.migrations.0004_modelartifact_owner")
    old = ModelArtifact.objects.create(
        name="Chats of stella: sessions 1", format="dataset", path=str(tmp_path / "a"),
        details={"source": "sessions", "value": [1], "user": staff.username},
    )  # fmt: skip
    upload = ModelArtifact.objects.create(
        name="an upload", format="dataset", path=str(tmp_path / "b"), details={"source": "upload", "user": "stella"}
    )
    migration.snapshots_owned(apps, None)
    old.refresh_from_db()
    upload.refresh_from_db()
    assert old.owner == staff and upload.owner is None
