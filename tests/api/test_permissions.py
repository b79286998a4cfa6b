"""Anonymous callers get 401 everywhere; another user's objects answer 404, never their data."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from agents.models import Agent
from sessions_app import services
from sessions_app.models import Message, Session


@pytest.fixture
def alice_session(user: Any, agent: Agent) -> Session:
    session = services.session_create(owner=user, agent=agent, title="alice's secret plans")
    Message.objects.create(session=session, role="user", content="the secret is 42")
    return session


def _endpoints(session: Session) -> list[tuple[str, str, dict[str, Any]]]:
    sid = session.pk
    mid = session.messages.first().pk  # type: ignore[union-attr]
    return [
        ("get", f"/api/sessions/{sid}/", {}),
        ("patch", f"/api/sessions/{sid}/", {"title": "pwned"}),
        ("delete", f"/api/sessions/{sid}/", {}),
        ("get", f"/api/sessions/{sid}/messages/", {}),
        ("post", f"/api/sessions/{sid}/messages/", {"content": "hello"}),
        ("get", f"/api/sessions/{sid}/messages/{mid}/", {}),
        ("post", f"/api/sessions/{sid}/stop/", {}),
    ]


def test_anonymous_caller_gets_401_on_every_endpoint(anon_api: APIClient, alice_session: Session) -> None:
    listing = [("get", "/api/sessions/", {}), ("post", "/api/sessions/", {}), ("get", "/api/agents/", {})]
    for method, url, body in listing + _endpoints(alice_session):
        response = getattr(anon_api, method)(url, body, format="json")
        assert response.status_code == 401, (method, url, response.status_code)
    assert Session.objects.get(pk=alice_session.pk).title == "alice's secret plans"


def test_another_user_gets_404_and_changes_nothing(other_api: APIClient, alice_session: Session) -> None:
    before = Message.objects.count()
    for method, url, body in _endpoints(alice_session):
        response = getattr(other_api, method)(url, body, format="json")
        assert response.status_code == 404, (method, url, response.status_code)
        assert b"secret" not in response.content
    assert Session.objects.filter(pk=alice_session.pk, title="alice's secret plans").exists()
    assert Message.objects.count() == before


def test_session_list_shows_only_the_callers_sessions(
    api: APIClient, other_api: APIClient, alice_session: Session
) -> None:
    assert [s["id"] for s in api.get("/api/sessions/").json()["results"]] == [alice_session.pk]
    assert other_api.get("/api/sessions/").json()["results"] == []


def test_a_bad_token_is_refused(alice_session: Session) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    assert client.get("/api/sessions/").status_code == 401


def test_restricted_agent_is_invisible_to_users_not_chosen(
    api: APIClient, other_api: APIClient, user: Any, agent: Agent
) -> None:
    agent.visibility = Agent.Visibility.RESTRICTED
    agent.save()
    agent.allowed_users.add(user)
    assert [a["slug"] for a in api.get("/api/agents/").json()["results"]] == ["helper"]
    assert other_api.get("/api/agents/").json()["results"] == []
    assert other_api.get("/api/agents/helper/").status_code == 404
    # Nor can they start a session with it.
    response = other_api.post("/api/sessions/", {"agent": "helper"}, format="json")
    assert response.status_code == 400


def test_users_cannot_create_or_edit_agents(api: APIClient, agent: Agent) -> None:
    assert api.post("/api/agents/", {"name": "x", "slug": "x"}, format="json").status_code == 403
    assert api.patch("/api/agents/helper/", {"name": "y"}, format="json").status_code == 403
    assert Agent.objects.get(slug="helper").name == "Helper"
