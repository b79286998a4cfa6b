from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from agents.models import Agent
from sessions_app import services
from sessions_app.models import Message

PAGES = [
    "/admin/",
    "/admin/agents/agent/",
    "/admin/agents/agent/add/",
    "/admin/inference/modelartifact/",
    "/admin/inference/modelartifact/add/",
    "/admin/inference/job/",
    "/admin/sessions_app/session/",
    "/admin/sessions_app/message/",
    "/admin/auth/user/",
    "/admin/sessions_app/apitoken/",
]


@pytest.fixture
def admin_client_with_data(superuser: Any, agent: Agent) -> Client:
    session = services.session_create(owner=superuser, agent=agent, title="A chat")
    Message.objects.create(session=session, role="user", content="hello")
    client = Client()
    client.force_login(superuser)
    return client


@pytest.mark.parametrize("url", PAGES)
def test_admin_page_renders(admin_client_with_data: Client, url: str) -> None:
    assert admin_client_with_data.get(url).status_code == 200


def test_admin_change_pages_render(admin_client_with_data: Client, agent: Agent) -> None:
    session = agent.sessions.first()
    assert session is not None
    message = session.messages.first()
    assert message is not None
    for url in [
        f"/admin/agents/agent/{agent.pk}/change/",
        f"/admin/inference/modelartifact/{agent.model_id}/change/",
        f"/admin/sessions_app/session/{session.pk}/change/",
        f"/admin/sessions_app/message/{message.pk}/change/",
    ]:
        page = admin_client_with_data.get(url)
        assert page.status_code == 200, url


def test_admin_needs_staff(user: Any) -> None:
    client = Client()
    client.force_login(user)
    assert client.get("/admin/agents/agent/").status_code == 302
