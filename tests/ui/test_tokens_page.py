"""The API tokens page: a new token is shown once and works; revoking it stops it at once."""

from __future__ import annotations

import re
from typing import Any

from django.test import Client
from rest_framework.test import APIClient

from sessions_app.models import ApiToken


def test_a_user_creates_uses_and_revokes_a_token_in_the_browser(user: Any) -> None:
    browser = Client()
    browser.force_login(user)
    page = browser.post("/tokens/", {"name": "laptop", "expires_in_days": "30"})
    assert page.status_code == 200 and page["Cache-Control"] == "no-store"
    secret = re.search(r'value="(cs_[^"]+)"', page.content.decode())
    assert secret is not None
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {secret.group(1)}")
    assert api.get("/api/sessions/").status_code == 200

    # Listed by name and prefix, never the secret again.
    listing = browser.get("/tokens/").content.decode()
    assert "laptop" in listing and secret.group(1) not in listing
    token = ApiToken.objects.get(user=user, name="laptop")
    assert browser.post(f"/tokens/{token.pk}/revoke/").status_code == 302
    assert api.get("/api/sessions/").status_code == 401
    assert "laptop" not in browser.get("/tokens/").content.decode()


def test_bad_input_and_other_users_tokens(user: Any, other_user: Any) -> None:
    browser = Client()
    browser.force_login(user)
    page = browser.post("/tokens/", {"name": "", "expires_in_days": "0"})
    assert b"This field is required" in page.content and not ApiToken.objects.filter(user=user).exists()
    theirs = ApiToken.objects.create(user=other_user, name="theirs", prefix="cs_x", key_hash="0" * 64)
    assert browser.post(f"/tokens/{theirs.pk}/revoke/").status_code == 404
    assert ApiToken.objects.get(pk=theirs.pk).revoked_at is None
    assert Client().get("/tokens/").status_code == 302  # signed out: to the login page
