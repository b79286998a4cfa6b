"""Compare mode: one user message answered by several agents side by side, the user's pick, the
leaderboard rated from picks, and the preference export."""

from __future__ import annotations

import json
from typing import Any

import pytest
from rest_framework.test import APIClient

from agents.models import Agent
from inference.models import ModelArtifact
from sessions_app.models import Message
from sessions_app.replies import reply_generate
from tests.fakes import FakeBackend
from tests.sessions_app.test_reply_lifecycle import fake_backend  # noqa: F401 - the autouse fixture
from tests.sessions_app.test_turns import make_agent

SLUGS = ["poet", "critic", "judge"]


@pytest.fixture
def trio(gguf_artifact: ModelArtifact) -> list[Agent]:
    return [make_agent(gguf_artifact, slug, slug.title()) for slug in SLUGS]


def compare(api: APIClient, sid: int, slugs: list[str], content: str = "Rain or snow?") -> list[dict[str, Any]]:
    response = api.post(f"/api/sessions/{sid}/messages/", {"content": content, "compare": slugs}, format="json")
    assert response.status_code == 202, response.json()
    return list(response.json())


def run_all(messages: list[dict[str, Any]]) -> None:
    for m in messages[1:]:
        reply_generate(message_id=m["id"])


@pytest.fixture
def sid(api: APIClient, trio: list[Agent]) -> int:
    return int(api.post("/api/sessions/", {"agents": SLUGS}, format="json").json()["id"])


def test_compare_queues_one_reply_per_agent_side_by_side(api: APIClient, sid: int) -> None:
    created = compare(api, sid, ["critic", "poet"])
    assert [(m["role"], m["agent"], m["turn"], m["status"]) for m in created] == [
        ("user", None, 0, "complete"),
        ("assistant", "critic", 1, "queued"),
        ("assistant", "poet", 2, "queued"),
    ]
    run_all(created)
    replies = Message.objects.filter(reply_to_id=created[0]["id"]).order_by("pk")
    assert [(m.agent.slug, m.status) for m in replies] == [("critic", "complete"), ("poet", "complete")]


@pytest.mark.parametrize(
    "slugs", [["poet"], ["poet", "critic", "judge", "poet", "critic"], ["poet", "poet"], ["poet", "ghost"]]
)
def test_a_bad_compare_answers_400_and_stores_nothing(api: APIClient, sid: int, slugs: list[str]) -> None:
    response = api.post(f"/api/sessions/{sid}/messages/", {"content": "Hi", "compare": slugs}, format="json")
    assert response.status_code == 400, response.json()
    assert not Message.objects.filter(session_id=sid).exists()


def test_a_pick_needs_every_reply_finished_and_may_change(api: APIClient, sid: int) -> None:
    created = compare(api, sid, ["critic", "poet"])
    pick = f"/api/sessions/{sid}/messages/{created[2]['id']}/pick/"
    assert api.post(pick).json()["code"] == "compare_running"
    run_all(created)
    response = api.post(pick)
    assert response.status_code == 200 and response.json() == {
        "reply_to": created[0]["id"], "picked": created[2]["id"], "agent": "poet"
    }  # fmt: skip
    assert api.post(f"/api/sessions/{sid}/messages/{created[1]['id']}/pick/").json()["agent"] == "critic"
    # Not a compared reply; another user's session.
    _, reply = api.post(f"/api/sessions/{sid}/messages/", {"content": "Hi"}, format="json").json()
    assert api.post(f"/api/sessions/{sid}/messages/{reply['id']}/pick/").json()["code"] == "not_compared"


def test_another_user_cannot_pick(api: APIClient, other_api: APIClient, sid: int) -> None:
    created = compare(api, sid, ["critic", "poet"])
    run_all(created)
    assert other_api.post(f"/api/sessions/{sid}/messages/{created[1]['id']}/pick/").status_code == 404


def test_picks_move_the_leaderboard(api: APIClient, sid: int) -> None:
    assert api.get("/api/leaderboard/").json() == []
    for _ in range(4):  # the poet beats the critic four times, the judge once
        created = compare(api, sid, ["critic", "poet"])
        run_all(created)
        api.post(f"/api/sessions/{sid}/messages/{created[2]['id']}/pick/")
    created = compare(api, sid, ["judge", "poet"])
    run_all(created)
    api.post(f"/api/sessions/{sid}/messages/{created[1]['id']}/pick/")
    rows = {r["agent"]: r for r in api.get("/api/leaderboard/").json()}
    assert (rows["poet"]["wins"], rows["poet"]["losses"], rows["poet"]["battles"]) == (4, 1, 5)
    assert (rows["critic"]["wins"], rows["critic"]["losses"]) == (0, 4)
    assert (rows["judge"]["wins"], rows["judge"]["losses"]) == (1, 0)
    assert rows["poet"]["rating"] > rows["critic"]["rating"]
    assert rows["critic"]["rating_low"] <= rows["critic"]["rating"] <= rows["critic"]["rating_high"]  # 5 picks
    assert list(rows) == sorted(rows, key=lambda a: -rows[a]["rating"])


def test_picks_export_as_preference_pairs(api: APIClient, other_api: APIClient, sid: int) -> None:
    FakeBackend.answer = lambda messages: f"From {messages[0]['content'] or 'someone'}"
    created = compare(api, sid, ["critic", "poet", "judge"], content="Which is best?")
    run_all(created)
    api.post(f"/api/sessions/{sid}/messages/{created[2]['id']}/pick/")
    response = api.get("/api/leaderboard/preferences/")
    assert response["Content-Type"] == "application/x-ndjson"
    rows = [json.loads(line) for line in response.content.decode().splitlines()]
    assert [(r["chosen_agent"], r["rejected_agent"]) for r in rows] == [("poet", "critic"), ("poet", "judge")]
    assert rows[0]["prompt"][-1] == {"role": "user", "content": "Which is best?"}
    assert other_api.get("/api/leaderboard/preferences/").content == b""


def test_only_the_picked_reply_goes_on_in_the_conversation(api: APIClient, sid: int) -> None:
    FakeBackend.answer = lambda messages: "answer " + str(len(FakeBackend.seen_messages))
    created = compare(api, sid, ["critic", "poet"])
    run_all(created)
    api.post(f"/api/sessions/{sid}/messages/{created[2]['id']}/pick/")
    picked = Message.objects.get(pk=created[2]["id"]).content
    _, reply = api.post(
        f"/api/sessions/{sid}/messages/", {"content": "And now?", "agent": "poet"}, format="json"
    ).json()
    reply_generate(message_id=reply["id"])
    assert FakeBackend.seen_messages[-1] == [
        {"role": "user", "content": "Rain or snow?"},
        {"role": "assistant", "content": picked},
        {"role": "user", "content": "And now?"},
    ]


def test_a_single_pick_gives_a_rating_but_no_interval(api: APIClient, sid: int) -> None:
    created = compare(api, sid, ["critic", "poet"])
    run_all(created)
    api.post(f"/api/sessions/{sid}/messages/{created[1]['id']}/pick/")
    rows = {r["agent"]: r for r in api.get("/api/leaderboard/").json()}
    assert rows["critic"]["rating"] > 1000 > rows["poet"]["rating"]
    assert rows["critic"]["rating_low"] is None and rows["critic"]["rating_high"] is None
