"""The page views without a browser: ownership, search, exports and the security headers."""

from __future__ import annotations

import json

from django.contrib.auth.models import User
from django.test import Client

from agents.models import Agent
from sessions_app.models import Message, Session
from sessions_app.selectors import session_list_for_user


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def chat_with(user: User, agent: Agent, title: str, *texts: str) -> Session:
    session = Session.objects.create(owner=user, agent=agent, title=title)
    for i, text in enumerate(texts):
        role = "user" if i % 2 == 0 else "assistant"
        backend = agent.backend if role == "assistant" else ""
        Message.objects.create(session=session, role=role, content=text, agent=agent, backend=backend)
    return session


def test_search_matches_title_or_any_message_once_and_only_the_owners(
    user: User, other_user: User, agent: Agent
) -> None:
    by_title = chat_with(user, agent, "Kiwi facts")
    by_content = chat_with(user, agent, "Fruit", "tell me about kiwi", "A KIWI is green.", "and kiwi seeds?")
    chat_with(user, agent, "Apples", "red ones")
    chat_with(other_user, agent, "kiwi too", "kiwi")
    found = list(session_list_for_user(user=user, search=" kiwi "))
    assert sorted(s.pk for s in found) == sorted([by_title.pk, by_content.pk])
    assert len(session_list_for_user(user=user, search="")) == 3


def test_the_chat_page_is_the_owners_only_and_sends_a_content_security_policy(
    user: User, other_user: User, agent: Agent
) -> None:
    session = chat_with(user, agent, "Mine", "hello")
    response = signed_in(user).get(f"/s/{session.pk}/")
    assert response.status_code == 200
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert signed_in(other_user).get(f"/s/{session.pk}/").status_code == 404
    assert Client().get(f"/s/{session.pk}/").status_code == 302  # to the sign-in page


def test_exports_hold_the_conversation_and_are_the_owners_only(user: User, other_user: User, agent: Agent) -> None:
    session = chat_with(user, agent, "Kiwi talk", "What is a kiwi?", "A fruit.\n\n| a | b |\n| - | - |")
    owner = signed_in(user)
    markdown = owner.get(f"/s/{session.pk}/export.md")
    assert markdown["Content-Disposition"] == f'attachment; filename="kiwi-talk-{session.pk}.md"'
    text = markdown.content.decode()
    assert text.startswith("# Kiwi talk\n") and "## You · " in text and "## Helper · llama_cpp · " in text
    assert "What is a kiwi?" in text and "| a | b |" in text
    data = json.loads(owner.get(f"/s/{session.pk}/export.json").content)
    assert [m["content"] for m in data["messages"]] == ["What is a kiwi?", "A fruit.\n\n| a | b |\n| - | - |"]
    for suffix in ("export.md", "export.json"):
        assert signed_in(other_user).get(f"/s/{session.pk}/{suffix}").status_code == 404


def test_a_new_chat_starts_with_the_agent_picked_and_refuses_an_unknown_one(user: User, agent: Agent) -> None:
    client = signed_in(user)
    response = client.post("/s/new/", {"agent": agent.slug})
    session = Session.objects.get(owner=user)
    assert response.status_code == 302 and response["Location"] == f"/s/{session.pk}/"
    assert session.agent == agent
    assert client.post("/s/new/", {"agent": "no-such-agent"}).status_code == 400


def test_the_sidebar_list_searches_and_separates_archived_chats(user: User, agent: Agent) -> None:
    chat_with(user, agent, "Kiwi", "x")
    archived = chat_with(user, agent, "Old kiwi", "y")
    archived.archived = True
    archived.save()
    client = signed_in(user)
    assert [s["title"] for s in client.get("/s/list.json?q=kiwi").json()["sessions"]] == ["Kiwi"]
    assert [s["title"] for s in client.get("/s/list.json?q=kiwi&archived=1").json()["sessions"]] == ["Old kiwi"]
