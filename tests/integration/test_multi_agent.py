"""Two agents in one session on the real stack (daphne, Redis, a Celery worker per backend, the
bundled model on llama.cpp and as an OpenVINO IR): round robin over two rounds answers with four
replies in order, each queued by the worker after the previous one is stored, with turn events
telling the client who speaks next; a stop ends the chain; a supervised round ends in its cap."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.integration.chat_client import Watcher, api, send, ws_open
from tests.integration.conftest import Platform
from tools.launch import manage

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def critic(platform: Platform) -> Iterator[str]:
    """A second agent on another backend: OpenVINO GenAI on the IR made from the bundled model,
    answered by its own worker on the ``openvino`` queue (the first agent runs on llama.cpp)."""
    from inference.convert import openvino_ir_for_bundled

    ir_dir = openvino_ir_for_bundled()
    manage(
        platform.env, "shell", "-c",
        "from agents.models import Agent\n"
        "from inference.models import ModelArtifact\n"
        "ir, _ = ModelArtifact.objects.get_or_create(name='SmolLM2 IR (tests)', format='openvino',"
        f" path={str(ir_dir)!r})\n"
        "Agent.objects.update_or_create(slug='critic', defaults=dict(name='Critic', model=ir, backend='openvino',"
        " system_prompt='You are a critic. Answer in one short sentence.', max_tokens=24, temperature=0.0))\n"
        # Its own llama.cpp agent: the other integration tests keep the bundled one as it is.
        "base = Agent.objects.get(slug='assistant')\n"
        "Agent.objects.update_or_create(slug='poet', defaults=dict(name='Poet', model=base.model,"
        " backend=base.backend, system_prompt='You are a poet. Answer in one short line.', max_tokens=24,"
        " temperature=0.0))\n",
    )  # fmt: skip
    platform.start_worker(name="worker-openvino", queues="openvino")
    yield "critic"
    platform.kill("worker-openvino")


def session_with(platform: Platform, policy: dict) -> int:
    status, body = api(
        platform.http, platform.tokens["alice"], "POST", "/api/sessions/",
        {"agents": ["poet", "critic"], "turn_policy": policy},
    )  # fmt: skip
    assert status == 201, body
    return int(body["id"])


def test_round_robin_over_two_rounds_on_the_real_stack(platform: Platform, critic: str) -> None:
    sid = session_with(platform, {"kind": "round_robin", "rounds": 2})
    watcher = Watcher(ws_open(platform.ws, sid, platform.tokens["alice"]))
    watcher.recv()
    send(watcher.ws, type="message", content="Name one fruit.")
    first = watcher.first_reply_id()
    watcher.until_done(first)
    turns = []
    for _ in range(3):
        turn = watcher.until(lambda e: e["type"] == "turn")
        turns.append((turn["agent"], turn["turn"], turn["turns"]))
        done = watcher.until_done(turn["message_id"])
        assert done.done is not None and done.done["status"] == "complete" and done.text
    watcher.close()
    assert turns == [("critic", 2, 4), ("poet", 3, 4), ("critic", 4, 4)]
    status, body = api(platform.http, platform.tokens["alice"], "GET", f"/api/sessions/{sid}/messages/")
    replies = [(m["agent"], m["turn"], m["status"]) for m in body["results"] if m["role"] == "assistant"]
    backends = {m["agent"]: m["backend"] for m in body["results"] if m["role"] == "assistant"}
    assert backends == {"poet": "llama_cpp", "critic": "openvino"}
    assert replies == [
        ("poet", 1, "complete"), ("critic", 2, "complete"), ("poet", 3, "complete"), ("critic", 4, "complete")
    ]  # fmt: skip


def test_a_stop_ends_the_chain_on_the_real_stack(platform: Platform, critic: str) -> None:
    sid = session_with(platform, {"kind": "round_robin", "rounds": 3})
    watcher = Watcher(ws_open(platform.ws, sid, platform.tokens["alice"]))
    watcher.recv()
    send(watcher.ws, type="message", content="Name one colour.")
    first = watcher.first_reply_id()
    watcher.until_done(first)
    turn = watcher.until(lambda e: e["type"] == "turn")
    send(watcher.ws, type="stop")
    done = watcher.until_done(turn["message_id"])
    assert done.done is not None and done.done["status"] in ("cancelled", "complete")
    watcher.close()
    status, body = api(platform.http, platform.tokens["alice"], "GET", f"/api/sessions/{sid}/messages/")
    replies = [m for m in body["results"] if m["role"] == "assistant"]
    assert len(replies) == 2  # nothing after the stopped turn, of the six planned


def test_a_supervised_round_ends_within_its_cap_on_the_real_stack(platform: Platform, critic: str) -> None:
    """The bundled 135M model is a poor supervisor: whatever it answers, the round ends (a pick
    that names nobody leaves a note) within max_turns replies, and nothing is left running."""
    sid = session_with(platform, {"kind": "supervisor", "supervisor": "poet", "max_turns": 2})
    token = platform.tokens["alice"]
    status, body = api(platform.http, token, "POST", f"/api/sessions/{sid}/messages/", {"content": "Name a tree."})
    assert status == 202 and [m["role"] for m in body] == ["user"], body

    def settled() -> list[dict] | None:
        _, page = api(platform.http, token, "GET", f"/api/sessions/{sid}/messages/")
        messages = page["results"]
        replies = [m for m in messages if m["role"] == "assistant"]
        notes = [m for m in messages if m["role"] == "system"]
        if any(m["status"] in ("queued", "streaming") for m in replies):
            return None
        return messages if notes or len(replies) >= 2 else None

    deadline = time.monotonic() + 120
    messages = None
    while messages is None and time.monotonic() < deadline:
        messages = settled()
        time.sleep(0.5)
    if messages is None:  # the supervisor said END early: nothing more comes
        _, page = api(platform.http, token, "GET", f"/api/sessions/{sid}/messages/")
        messages = page["results"]
    replies = [m for m in messages if m["role"] == "assistant"]
    assert len(replies) <= 2 and all(m["status"] == "complete" for m in replies)
    assert all(m["agent"] == "critic" for m in replies)  # the supervisor picks among the others
    time.sleep(3)
    _, page = api(platform.http, token, "GET", f"/api/sessions/{sid}/messages/")
    assert len(page["results"]) == len(messages)  # nothing more was started
