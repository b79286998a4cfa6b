"""``POST /api/sessions/<id>/messages/`` takes the same per-reply ``params`` as the websocket, checked
by the same model with the same words; a bad one is a 400 naming the setting, and nothing is stored."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from agents.models import Agent
from sessions_app.live import CADENCE_TOKEN
from sessions_app.models import Message


@pytest.fixture
def sid(api: APIClient, agent: Agent, monkeypatch: Any) -> int:
    monkeypatch.setattr("sessions_app.dispatch.reply_enqueue", lambda **kwargs: None)
    return int(api.post("/api/sessions/", {"agent": "helper"}, format="json").json()["id"])


def test_params_reach_the_reply(api: APIClient, sid: int) -> None:
    params = {"max_tokens": 7, "temperature": 0, "top_p": 1, "seed": 3, "system_prompt": "Be brief."}
    response = api.post(f"/api/sessions/{sid}/messages/", {"content": "Hi", "params": params}, format="json")
    assert response.status_code == 202, response.content
    reply = Message.objects.get(pk=response.json()[1]["id"])
    assert reply.params == {"max_tokens": 7, "temperature": 0.0, "top_p": 1.0, "seed": 3, "system_prompt": "Be brief.",
                            "cadence": CADENCE_TOKEN}  # fmt: skip


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({"max_tokens": 0}, "params.max_tokens", "params.max_tokens must be between 1 and 131072."),
        ({"max_tokens": 100_000}, "params.max_tokens", "params.max_tokens is 100000; this agent allows at most"),
        ({"temperature": "hot"}, "params.temperature", "params.temperature must be a number."),
        ({"temperature": None}, "params.temperature", "params.temperature must be a number."),
        ({"seed": True}, "params.seed", "params.seed must be an integer."),
        ({"system_prompt": 5}, "params.system_prompt", "params.system_prompt must be a string of at most"),
        ({"logit_bias": {}}, "params.logit_bias", "Unknown setting params.logit_bias; known: max_tokens,"),
        ("greedy", "params", "params must be an object."),
    ],
)
def test_bad_params_are_a_400_naming_the_setting(
    api: APIClient, sid: int, params: Any, field: str, message: str
) -> None:
    body = {"content": "Hi", "agent": "helper", "params": params}
    response = api.post(f"/api/sessions/{sid}/messages/", body, format="json")
    assert response.status_code == 400, response.content
    answer = response.json()
    assert (answer["code"], answer["field"]) == ("invalid_params", field), answer
    assert message in answer["message"] and list(answer["errors"]) == [field], answer
    assert Message.objects.filter(session_id=sid).count() == 0
