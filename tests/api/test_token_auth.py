from __future__ import annotations

from typing import Any

from rest_framework.test import APIClient


def test_username_and_password_give_a_token_that_authenticates(user: Any) -> None:
    client = APIClient()
    response = client.post("/api/auth/token/", {"username": "alice", "password": "alice-password-1"}, format="json")
    assert response.status_code == 200
    token = response.json()["token"]
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.get("/api/sessions/").status_code == 200


def test_a_wrong_password_gets_no_token(user: Any) -> None:
    response = APIClient().post("/api/auth/token/", {"username": "alice", "password": "nope"}, format="json")
    assert response.status_code == 400
    assert "token" not in response.json()


def test_the_browser_session_cookie_also_works(user: Any) -> None:
    client = APIClient()
    assert client.login(username="alice", password="alice-password-1")
    assert client.get("/api/sessions/").status_code == 200
