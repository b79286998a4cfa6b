from __future__ import annotations

from typing import Any

from rest_framework.test import APIClient

from agents.models import Agent
from sessions_app.models import Message, Session


def test_create_rename_archive_and_delete_a_session(api: APIClient, agent: Agent) -> None:
    created = api.post("/api/sessions/", {"agent": "helper", "title": "Trip"}, format="json")
    assert created.status_code == 201, created.content
    sid = created.json()["id"]
    assert created.json()["agent"] == "helper"
    assert (
        api.patch(f"/api/sessions/{sid}/", {"title": "Trip to Lyon"}, format="json").json()["title"] == "Trip to Lyon"
    )
    assert api.patch(f"/api/sessions/{sid}/", {"archived": True}, format="json").json()["archived"] is True
    assert api.get("/api/sessions/?archived=false").json()["results"] == []
    assert [s["id"] for s in api.get("/api/sessions/?archived=true").json()["results"]] == [sid]
    assert api.delete(f"/api/sessions/{sid}/").status_code == 204
    assert not Session.objects.filter(pk=sid).exists()


def test_posting_a_message_stores_it_and_queues_a_reply(
    api: APIClient, agent: Agent, django_capture_on_commit_callbacks: Any, monkeypatch: Any
) -> None:
    queued: list[tuple[int, str]] = []
    monkeypatch.setattr(
        "sessions_app.dispatch.reply_enqueue", lambda *, message_id, queue: queued.append((message_id, queue))
    )
    sid = api.post("/api/sessions/", {"agent": "helper"}, format="json").json()["id"]
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(
            f"/api/sessions/{sid}/messages/", {"content": "Hi there", "client_id": "c-1"}, format="json"
        )
    assert response.status_code == 202
    sent, reply = response.json()
    assert (sent["role"], sent["content"], sent["status"]) == ("user", "Hi there", "complete")
    assert (reply["role"], reply["status"], reply["agent"]) == ("assistant", "queued", "helper")
    assert queued == [(reply["id"], "llama_cpp")]
    # The session takes its title from the first message.
    assert api.get(f"/api/sessions/{sid}/").json()["title"] == "Hi there"

    # Resending with the same client_id stores nothing new and queues nothing new.
    with django_capture_on_commit_callbacks(execute=True):
        again = api.post(f"/api/sessions/{sid}/messages/", {"content": "Hi there", "client_id": "c-1"}, format="json")
    assert [m["id"] for m in again.json()] == [sent["id"], reply["id"]]
    assert Message.objects.filter(session_id=sid).count() == 2
    assert len(queued) == 1


def test_empty_and_oversized_messages_are_refused(api: APIClient, agent: Agent, settings: Any) -> None:
    settings.MESSAGE_MAX_CHARS = 10
    sid = api.post("/api/sessions/", {"agent": "helper"}, format="json").json()["id"]
    empty = api.post(f"/api/sessions/{sid}/messages/", {"content": "   "}, format="json")
    assert empty.status_code == 400 and empty.json()["code"] == "empty_content"
    long = api.post(f"/api/sessions/{sid}/messages/", {"content": "x" * 11}, format="json")
    assert long.status_code == 400 and "limit is 10" in long.json()["message"]
    assert Message.objects.filter(session_id=sid).count() == 0


def test_stop_cancels_a_queued_reply_and_keeps_the_message(api: APIClient, user: Any, agent: Agent) -> None:
    session = Session.objects.create(owner=user, agent=agent)
    reply = Message.objects.create(session=session, role="assistant", agent=agent, status="queued")
    assert api.post(f"/api/sessions/{session.pk}/stop/").json() == {"stopping": [reply.pk]}
    reply.refresh_from_db()
    assert reply.status == "cancelled" and reply.cancel_requested


def test_schema_and_docs_pages_render(api: APIClient) -> None:
    schema = api.get("/api/schema/")
    assert schema.status_code == 200
    assert b"/api/sessions/{session_id}/messages/" in schema.content
    assert api.get("/api/docs/").status_code == 200
