"""Per-user rate limits answer 429; request bodies and messages have size limits."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient
from rest_framework.throttling import UserRateThrottle

from agents.models import Agent


@pytest.fixture
def tight_limit(monkeypatch: Any) -> None:
    monkeypatch.setattr(UserRateThrottle, "THROTTLE_RATES", {"user": "3/minute", "anon": "3/minute"})
    from django.core.cache import cache

    cache.clear()


def test_the_fourth_request_in_a_minute_gets_429(api: APIClient, other_api: APIClient, tight_limit: None) -> None:
    assert [api.get("/api/sessions/").status_code for _ in range(3)] == [200, 200, 200]
    limited = api.get("/api/sessions/")
    assert limited.status_code == 429
    assert limited.json()["code"] == "rate_limited" and "try again" in limited.json()["message"]
    assert "Retry-After" in limited.headers
    # The limit is per user.
    assert other_api.get("/api/sessions/").status_code == 200


def test_a_body_over_the_limit_is_refused(api: APIClient, agent: Agent, settings: Any) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    sid = api.post("/api/sessions/", {"agent": "helper"}, format="json").json()["id"]
    response = api.post(f"/api/sessions/{sid}/messages/", {"content": "x" * 5000}, format="json")
    assert response.status_code in (400, 413)
    assert api.get(f"/api/sessions/{sid}/messages/").json()["count"] == 0


def test_a_message_over_the_agents_prompt_cap_states_the_limit(api: APIClient, agent: Agent) -> None:
    agent.max_prompt_chars = 20
    agent.save()
    sid = api.post("/api/sessions/", {"agent": "helper"}, format="json").json()["id"]
    response = api.post(f"/api/sessions/{sid}/messages/", {"content": "y" * 21}, format="json")
    assert response.status_code == 400
    assert "at most 20" in response.json()["message"]
