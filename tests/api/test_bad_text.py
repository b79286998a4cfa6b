"""Text no door may pass on (a NUL, a lone surrogate), values of the wrong type and bodies nested
too deeply: a 400 naming the place, nothing stored.

These run on SQLite, which would store a NUL; ``tests/integration/test_bad_input.py`` sends the
same through the deployed shape on PostgreSQL, which refuses it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from rest_framework.test import APIClient

from agents.models import Agent
from sessions_app.models import Message, Session
from sessions_app.tokens import token_create

NUL = "a\x00b"
SURROGATE = "a\ud800b"


def _raw(body: Any) -> bytes:
    # ensure_ascii (the default) writes a lone surrogate as the escape "\ud800", as clients do.
    return json.dumps(body).encode()


def _post(api: APIClient, path: str, body: Any) -> Any:
    return api.generic("POST", path, _raw(body), content_type="application/json")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"content": NUL}, "content: contains a NUL character"),
        ({"content": SURROGATE}, "content: contains a lone surrogate (\\ud800)"),
        ({"content": "hi", "agent": SURROGATE}, "agent: contains a lone surrogate"),
        ({"content": "hi", "compare": ["helper", NUL]}, "compare[1]: contains a NUL character"),
        ({"content": "hi", NUL: 1}, '["a\\u0000b"]: the key contains a NUL character'),
    ],
)
def test_a_message_with_a_nul_or_a_lone_surrogate_is_400_naming_the_place(
    api: APIClient, agent: Agent, body: dict[str, Any], message: str
) -> None:
    sid = api.post("/api/sessions/", {"agent": "helper"}, format="json").json()["id"]
    response = _post(api, f"/api/sessions/{sid}/messages/", body)
    assert response.status_code == 400, response.content
    assert response.json()["message"].startswith(message), response.json()
    place = message.split(": ")[0]
    assert list(response.json()["errors"]) == [place]
    assert Message.objects.count() == 0


@pytest.mark.parametrize("value", [5, 2.5, ["hi"], {"text": "hi"}])
def test_message_content_must_be_a_string(api: APIClient, agent: Agent, value: Any) -> None:
    sid = api.post("/api/sessions/", {"agent": "helper"}, format="json").json()["id"]
    response = api.post(f"/api/sessions/{sid}/messages/", {"content": value}, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["message"].startswith("content: ") and "content" in response.json()["errors"]
    assert Message.objects.count() == 0


def test_an_edit_must_be_a_string(api: APIClient, agent: Agent, monkeypatch: Any) -> None:
    monkeypatch.setattr("sessions_app.dispatch.reply_enqueue", lambda **kwargs: None)
    sid = api.post("/api/sessions/", {"agent": "helper"}, format="json").json()["id"]
    sent = api.post(f"/api/sessions/{sid}/messages/", {"content": "Hi"}, format="json").json()[0]
    for value in (5, NUL):
        response = api.generic(
            "PATCH", f"/api/sessions/{sid}/messages/{sent['id']}/", _raw({"content": value}), "application/json"
        )
        assert response.status_code == 400 and response.json()["message"].startswith("content: "), response.content
    assert Message.objects.get(pk=sent["id"]).content == "Hi"


@pytest.mark.parametrize(
    ("body", "place"),
    [
        ({"title": 5}, "title"),
        ({"title": NUL}, "title"),
        ({"title": "t" * 201}, "title"),
        ({"agent": 5}, "agent"),
        ({"agents": ["helper", 5]}, "agents[1]"),
        ({"turn_policy": {"kind": NUL}}, "turn_policy.kind"),
        ({"turn_policy": {"kind": "manual", SURROGATE: 1}}, 'turn_policy["a\\ud800b"]'),
    ],
)
def test_a_session_with_bad_fields_is_400_naming_the_place(
    api: APIClient, agent: Agent, body: dict[str, Any], place: str
) -> None:
    response = _post(api, "/api/sessions/", {"agent": "helper", **body})
    assert response.status_code == 400, response.content
    assert response.json()["message"].startswith(f"{place}: "), response.json()
    assert Session.objects.count() == 0


@pytest.mark.parametrize("body", [{"title": 5}, {"title": SURROGATE}])
def test_a_rename_with_bad_fields_changes_nothing(api: APIClient, agent: Agent, body: dict[str, Any]) -> None:
    sid = api.post("/api/sessions/", {"agent": "helper", "title": "Kept"}, format="json").json()["id"]
    response = api.generic("PATCH", f"/api/sessions/{sid}/", _raw(body), content_type="application/json")
    assert response.status_code == 400, response.content
    session = Session.objects.get(pk=sid)
    assert (session.title, session.turn_policy["kind"]) == ("Kept", "manual")


def test_a_form_body_with_a_nul_is_400(api: APIClient, agent: Agent) -> None:
    response = api.generic(
        "POST", "/api/sessions/", "agent=helper&title=a%00b", content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 400, response.content
    assert response.json()["message"].startswith("title: contains a NUL character"), response.content
    assert Session.objects.count() == 0


def test_a_body_nested_too_deeply_is_400(api: APIClient, agent: Agent) -> None:
    response = api.generic("POST", "/api/sessions/", b"[" * 100_000 + b"]" * 100_000, content_type="application/json")
    assert response.status_code == 400 and response.json()["code"] == "parse_error", response.content
    assert Session.objects.count() == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [("name", 5), ("slug", 5), ("system_prompt", 5), ("description", ["x"]), ("name", NUL), ("name", "n" * 101)],
)
def test_an_agent_with_a_field_of_the_wrong_type_is_400(staff_api: APIClient, field: str, value: Any) -> None:
    body = {"name": "Typed", "slug": "typed", "backend": "llama_cpp", field: value}
    response = staff_api.generic("POST", "/api/agents/", _raw(body), content_type="application/json")
    assert response.status_code == 400, response.content
    assert response.json()["message"].startswith(f"{field}: ") and field in response.json()["errors"]
    assert not Agent.objects.exists()


# --- /v1/chat/completions ------------------------------------------------------------------------


@pytest.fixture
def v1(user: User) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {token_create(user=user, name='tests')[1]}")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": NUL}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": SURROGATE}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": NUL}]}]}, "messages[0].content[0].text"),
        ({"messages": [{"role": "user", "content": "hi"}], "stop": ["ok", SURROGATE]}, "stop[1]"),
        ({"messages": [{"role": "user", "content": "hi"}], "user": NUL}, "user"),
        ({"model": NUL, "messages": [{"role": "user", "content": "hi"}]}, "model"),
    ],
)
def test_v1_refuses_a_nul_or_a_lone_surrogate_naming_the_param(
    v1: Client, agent: Agent, body: dict[str, Any], param: str
) -> None:
    response = v1.post("/v1/chat/completions", _raw({"model": "helper", **body}), content_type="application/json")
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("invalid_value", param)
    assert error["message"].startswith(f"{param}: contains a ")
    assert Session.objects.count() == 0 and Message.objects.count() == 0


def test_v1_refuses_a_body_nested_too_deeply(v1: Client, agent: Agent) -> None:
    response = v1.post("/v1/chat/completions", b"[" * 100_000 + b"]" * 100_000, content_type="application/json")
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"


# --- the URL: a NUL in its path or query ------------------------------------------------------


def test_v1_refuses_a_model_path_with_a_nul(v1: Client, agent: Agent) -> None:
    response = v1.get("/v1/models/a%00b")
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "invalid_value"
    assert response.json()["error"]["message"].startswith("The URL's path contains a NUL character")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("/api/sessions/?search=a%00b", "search: contains a NUL character"),
        ("/api/sessions/1/messages/?role=%00", "role: contains a NUL character"),
        ("/api/sessions/?%00=1", '["\\u0000"]: the query parameter\'s name contains a NUL character'),
        ("/api/agents/a%00b/", "The URL's path contains a NUL character"),
    ],
)
def test_a_url_with_a_nul_is_400(api: APIClient, agent: Agent, url: str, message: str) -> None:
    response = api.get(url)
    assert response.status_code == 400, response.content
    assert response.json()["message"].startswith(message), response.json()
