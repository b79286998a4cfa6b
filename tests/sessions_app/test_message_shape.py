"""A message has one shape on every door: REST, the websocket's snapshot and events, SSE, the export."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from agents.models import Agent
from sessions_app import services
from sessions_app.follow import _snapshot
from sessions_app.models import Message
from sessions_app.selectors import message_payload, session_export


@pytest.fixture(autouse=True)
def no_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sessions_app.dispatch.reply_enqueue", lambda **_: None)


def test_rest_the_snapshot_and_the_export_show_a_message_alike(api: APIClient, user: Any, agent: Agent) -> None:
    session = services.session_create(owner=user, agent=agent)
    _, reply = services.message_send(session=session, content="Hi")
    Message.objects.filter(pk=reply.pk).update(
        status="complete",
        content="Hello.",
        completion_tokens=2,
        ttft_ms=12.5,
        reasoning="A greeting.",
        reasoning_ms=900,
    )
    reply.refresh_from_db()
    events = message_payload(reply)  # what chat.message / chat.done events and SSE carry

    detail = api.get(f"/api/sessions/{session.pk}/messages/{reply.pk}/").json()
    listed = api.get(f"/api/sessions/{session.pk}/messages/").json()["results"][1]
    snapshot = _snapshot(session, None)["messages"][1]
    exported = session_export(session=session)["messages"][1]
    for shape in (detail, listed, snapshot, exported):
        assert shape == events
    assert events["model"] == agent.model.name and events["agent_name"] == agent.name
    assert events["stats"] == {
        "prompt_tokens": None, "completion_tokens": 2, "ttft_ms": 12.5, "decode_tps": None, "reasoning_tokens": None
    }  # fmt: skip
    assert (events["content"], events["reasoning"], events["reasoning_ms"]) == ("Hello.", "A greeting.", 900)
