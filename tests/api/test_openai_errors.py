"""The ``/v1`` door refuses bad calls with OpenAI's error object and status, before any reply is
queued (in-process: no model, no worker)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from agents.models import Agent
from sessions_app.models import Session
from sessions_app.tokens import token_create


@pytest.fixture
def client(user: User) -> Client:
    _, secret = token_create(user=user, name="tests")
    return Client(HTTP_AUTHORIZATION=f"Bearer {secret}")


def _post(client: Client, body: Any) -> tuple[int, dict[str, Any]]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = client.post("/v1/chat/completions", raw, content_type="application/json")
    return response.status_code, response.json()["error"]


def test_a_bad_parameter_is_400_with_openais_error_object(client: Client, agent: Agent) -> None:
    status, error = _post(client, {"model": "helper", "messages": [{"role": "user", "content": "Hi"}], "top_p": 2})
    assert status == 400 and set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "invalid_value", "top_p")
    assert Session.objects.count() == 0


def test_an_unknown_model_is_404(client: Client, agent: Agent) -> None:
    status, error = _post(client, {"model": "nope", "messages": [{"role": "user", "content": "Hi"}]})
    assert (status, error["code"], error["param"]) == (404, "model_not_found", "model")


def test_a_body_that_is_not_json_is_400(client: Client, agent: Agent) -> None:
    assert _post(client, b"{not json")[1]["code"] == "invalid_json"


def test_a_body_over_the_limit_is_413(client: Client, agent: Agent, settings: Any) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    status, error = _post(client, {"model": "helper", "messages": [{"role": "user", "content": "x" * 5000}]})
    assert (status, error["code"]) == (413, "request_too_large")


@pytest.mark.parametrize("header", ["Bearer cs_not-a-real-token", "Basic dXNlcjpwYXNz"])
def test_a_bad_token_is_401(db: Any, header: str) -> None:
    response = Client(HTTP_AUTHORIZATION=header).get("/v1/models")
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"


def test_no_token_is_401(db: Any) -> None:
    response = Client().get("/v1/models")
    assert response.status_code == 401 and response.json()["error"]["code"] == "missing_api_key"


def test_a_wrong_method_is_405_with_allow(client: Client) -> None:
    response = client.get("/v1/chat/completions")
    assert response.status_code == 405 and response["Allow"] == "POST"
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_a_cookie_post_without_the_csrf_token_is_403(user: User, agent: Agent) -> None:
    browser = Client(enforce_csrf_checks=True)
    browser.get("/login/")  # the page a browser loads first sets the CSRF cookie
    browser.force_login(user)
    assert browser.get("/v1/models").status_code == 200
    body = json.dumps({"model": "helper", "messages": [], "max_tokens": 5})
    forged = browser.post("/v1/chat/completions", body, content_type="application/json")
    assert forged.status_code == 403 and forged.json()["error"]["code"] == "csrf_failed"
    own = browser.post(
        "/v1/chat/completions",
        body,
        content_type="application/json",
        HTTP_X_CSRFTOKEN=browser.cookies["csrftoken"].value,
    )
    assert own.status_code == 400 and own.json()["error"]["param"] == "messages"
