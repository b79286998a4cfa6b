"""Named API tokens: shown once, stored hashed, listed without the secret, revoked or expired at once."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.utils import timezone
from rest_framework.test import APIClient

from sessions_app.models import ApiToken


def test_login_gives_a_named_token_that_works(user: Any) -> None:
    client = APIClient()
    got = client.post(
        "/api/auth/token/", {"username": "alice", "password": "alice-password-1", "name": "laptop"}, format="json"
    )
    assert got.status_code == 200
    secret = got.json()["token"]
    assert got.json()["name"] == "laptop" and secret.startswith("cs_")
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert client.get("/api/sessions/").status_code == 200


def test_tokens_are_stored_hashed_and_listed_without_the_secret(api: APIClient, user: Any) -> None:
    made = api.post("/api/tokens/", {"name": "ci", "expires_in_days": 7}, format="json")
    assert made.status_code == 201
    secret = made.json()["token"]
    stored = ApiToken.objects.get(pk=made.json()["id"])
    assert secret not in (stored.key_hash, stored.prefix) and len(stored.key_hash) == 64
    listing = api.get("/api/tokens/")
    assert secret not in listing.content.decode()
    assert {t["name"] for t in listing.json()} == {"tests", "ci"}
    assert all("token" not in t for t in listing.json())
    expires = timezone.datetime.fromisoformat(made.json()["expires_at"])
    assert timedelta(days=6) < expires - timezone.now() <= timedelta(days=7)


def test_a_revoked_token_stops_working_at_once(api: APIClient, user: Any) -> None:
    made = api.post("/api/tokens/", {"name": "temp"}, format="json").json()
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Token {made['token']}")
    assert other.get("/api/sessions/").status_code == 200
    assert api.delete(f"/api/tokens/{made['id']}/").status_code == 204
    refused = other.get("/api/sessions/")
    assert refused.status_code == 401 and refused.json()["code"] == "authentication_failed"
    assert "temp" not in {t["name"] for t in api.get("/api/tokens/").json()}


def test_an_expired_token_stops_working(api: APIClient, user: Any) -> None:
    made = api.post("/api/tokens/", {"name": "short"}, format="json").json()
    ApiToken.objects.filter(pk=made["id"]).update(expires_at=timezone.now() - timedelta(seconds=1))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {made['token']}")
    assert client.get("/api/sessions/").status_code == 401


def test_another_users_token_cannot_be_revoked(api: APIClient, other_api: APIClient) -> None:
    made = api.post("/api/tokens/", {"name": "mine"}, format="json").json()
    assert other_api.delete(f"/api/tokens/{made['id']}/").status_code == 404
    assert ApiToken.objects.get(pk=made["id"]).revoked_at is None


def test_bad_input_gets_field_errors(api: APIClient) -> None:
    bad = api.post("/api/tokens/", {"expires_in_days": 0}, format="json")
    assert bad.status_code == 400
    body = bad.json()
    assert body["code"] == "invalid" and set(body["errors"]) == {"name", "expires_in_days"}


def test_a_token_name_must_be_a_string(api: APIClient) -> None:
    """DRF's CharField would store the number 5 as the name "5"."""
    bad = api.post("/api/tokens/", {"name": 5}, format="json")
    assert bad.status_code == 400
    assert set(bad.json()["errors"]) == {"name"}
    assert ApiToken.objects.filter(name="5").count() == 0
