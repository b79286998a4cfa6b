"""Two agents in one session on the real stack (daphne, Redis, a Celery worker per backend, the
bundled model on llama.cpp and as an OpenVINO IR): round robin over two rounds answers with four
replies in order, each queued by the worker after the previous one is stored, with turn events
telling the client who speaks next; a stop ends the chain; a supervisor's picks are answered by the
agents it picks, within its cap; the bundled model as a supervisor ends its round visibly.

Every reply a test expects must be there, ``complete`` and with text: a run in which no agent
answered fails."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.integration.chat_client import Watcher, api, send, ws_open
from tests.integration.conftest import Platform, free_port
from tests.platform_shell import shell_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def critic(platform: Platform) -> Iterator[str]:
    """A second agent on another backend: OpenVINO GenAI on the IR made from the bundled model,
    answered by its own worker on the ``openvino`` queue (the first agent runs on llama.cpp)."""
    from pipeline.convert import openvino_ir_for_bundled

    ir_dir = openvino_ir_for_bundled()
    shell_run(
        platform,
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
    answered = watcher.until_done(first)
    assert answered.done is not None and answered.done["status"] == "complete" and answered.text.strip()
    turns = []
    for _ in range(3):
        turn = watcher.until(lambda e: e["type"] == "turn")
        turns.append((turn["agent"], turn["turn"], turn["turns"]))
        done = watcher.until_done(turn["message_id"])
        assert done.done is not None and done.done["status"] == "complete" and done.text.strip()
    watcher.close()
    assert turns == [("critic", 2, 4), ("poet", 3, 4), ("critic", 4, 4)]
    status, body = api(platform.http, platform.tokens["alice"], "GET", f"/api/sessions/{sid}/messages/")
    replies = [(m["agent"], m["turn"], m["status"]) for m in body["results"] if m["role"] == "assistant"]
    backends = {m["agent"]: m["backend"] for m in body["results"] if m["role"] == "assistant"}
    assert backends == {"poet": "llama_cpp", "critic": "openvino"}
    assert replies == [
        ("poet", 1, "complete"), ("critic", 2, "complete"), ("poet", 3, "complete"), ("critic", 4, "complete")
    ]  # fmt: skip
    assert all(m["content"].strip() for m in body["results"] if m["role"] == "assistant")  # each said something


def test_a_stop_ends_the_chain_on_the_real_stack(platform: Platform, critic: str) -> None:
    sid = session_with(platform, {"kind": "round_robin", "rounds": 3})
    watcher = Watcher(ws_open(platform.ws, sid, platform.tokens["alice"]))
    watcher.recv()
    send(watcher.ws, type="message", content="Name one colour.")
    first = watcher.first_reply_id()
    answered = watcher.until_done(first)
    assert answered.done is not None and answered.done["status"] == "complete" and answered.text.strip()
    turn = watcher.until(lambda e: e["type"] == "turn")
    send(watcher.ws, type="stop")
    done = watcher.until_done(turn["message_id"])
    assert done.done is not None and done.done["status"] in ("cancelled", "complete")
    watcher.close()
    status, body = api(platform.http, platform.tokens["alice"], "GET", f"/api/sessions/{sid}/messages/")
    replies = [m for m in body["results"] if m["role"] == "assistant"]
    assert len(replies) == 2  # nothing after the stopped turn, of the six planned
    assert replies[0]["id"] == first and replies[0]["status"] == "complete" and replies[0]["content"].strip()


class ScriptedSupervisor(BaseHTTPRequestHandler):
    """An OpenAI-compatible server standing in for a supervisor model that follows its
    instruction (the bundled 135M model does not): it answers the picks of ``PICKS`` in turn,
    then END, and keeps every request it was sent."""

    PICKS = ["critic", "poet"]
    requests: list[dict[str, Any]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, content_type: str, data: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = {"object": "list", "data": [{"id": "host", "object": "model", "owned_by": "test"}]}
        self._send("application/json", json.dumps(body).encode())

    def do_POST(self) -> None:  # noqa: N802
        request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        asked = len(type(self).requests)
        type(self).requests.append(request)
        pick = self.PICKS[asked] if asked < len(self.PICKS) else "END"
        # The pick is asked for under a choice: a string-enum schema, answered as a JSON string.
        chunks = [
            {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "host",
             "choices": [{"index": 0, "delta": {"content": json.dumps(pick)}, "finish_reason": None}]},
            {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "host",
             "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        ]  # fmt: skip
        events = "".join(f"data: {json.dumps(chunk)}\n\n" for chunk in chunks) + "data: [DONE]\n\n"
        self._send("text/event-stream", events.encode())


@pytest.fixture(scope="module")
def host(platform: Platform, critic: str) -> Iterator[type[ScriptedSupervisor]]:
    """A supervisor agent ``host`` on its own worker (the ``openai_compat`` queue)."""
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), ScriptedSupervisor)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    shell_run(
        platform,
        "from agents.models import Agent\n"
        f"Agent.objects.update_or_create(slug='host', defaults=dict(name='Host', backend='openai_compat', "
        f"backend_options={{'base_url': {url!r}}}))",
    )  # fmt: skip
    platform.start_worker("worker-supervisor", queues="openai_compat", pool="threads", concurrency=2)
    try:
        yield ScriptedSupervisor
    finally:
        platform.kill("worker-supervisor")
        server.shutdown()


def test_a_supervisors_picks_are_answered_by_the_agents_it_picks_on_the_real_stack(
    platform: Platform, host: type[ScriptedSupervisor]
) -> None:
    host.requests.clear()
    policy = {"kind": "supervisor", "supervisor": "host", "max_turns": 2}
    body = {"agents": ["host", "poet", "critic"], "turn_policy": policy}
    status, body = api(platform.http, platform.tokens["alice"], "POST", "/api/sessions/", body)
    assert status == 201, body
    sid = int(body["id"])
    watcher = Watcher(ws_open(platform.ws, sid, platform.tokens["alice"]))
    watcher.recv()
    send(watcher.ws, type="message", content="Name a tree.")
    turns = []
    for _ in range(2):
        turn = watcher.until(lambda e: e["type"] == "turn")
        turns.append((turn["agent"], turn["turn"]))
        done = watcher.until_done(turn["message_id"])
        assert done.done is not None and done.done["status"] == "complete" and done.text.strip()
    watcher.close()
    assert turns == [("critic", 1), ("poet", 2)]  # as picked, each on its own backend's worker
    time.sleep(3)  # the cap is reached: nothing more is asked or started
    status, page = api(platform.http, platform.tokens["alice"], "GET", f"/api/sessions/{sid}/messages/")
    replies = [m for m in page["results"] if m["role"] == "assistant"]
    assert [(m["agent"], m["turn"], m["status"], m["backend"]) for m in replies] == [
        ("critic", 1, "complete", "openvino"), ("poet", 2, "complete", "llama_cpp")
    ]  # fmt: skip
    assert all(m["content"].strip() for m in replies)
    assert not [m for m in page["results"] if m["role"] == "system"]  # no note: nothing went wrong
    assert len(host.requests) == 2  # one pick per turn, none past the cap
    # Each pick was decoded under a choice of the others' slugs and END.
    for request in host.requests:
        schema = request["response_format"]["json_schema"]["schema"]
        assert sorted(schema["enum"]) == ["END", "critic", "poet"], request["response_format"]
    # The second pick saw the critic's turn by name, and whom it may pick.
    second = host.requests[1]["messages"]
    assert "- Critic [critic]" in second[0]["content"] and "- Poet [poet]" in second[0]["content"]
    assert any(m["role"] == "user" and "Critic: " in m["content"] for m in second[1:])


def test_the_bundled_model_as_a_supervisor_ends_its_round_visibly_on_the_real_stack(
    platform: Platform, critic: str
) -> None:
    """The bundled 135M model is a poor supervisor, but its answer is decoded under a choice of
    the participants' slugs and END: every pick names a participant or ends the round, never
    "names no participant". The round ends within max_turns replies, each complete and with text;
    a round that ends without a reply says why in a note; nothing is left running."""
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
    notes = [m["content"] for m in messages if m["role"] == "system"]
    assert len(replies) <= 2 and all(m["status"] == "complete" and m["content"].strip() for m in replies)
    assert all(m["agent"] == "critic" for m in replies)  # the supervisor picks among the others
    assert not [n for n in notes if "names no participant" in n], notes
    if not replies:  # the supervisor said END before any agent answered: the user is told so
        assert notes == [notes[0]] and "ended the round before any agent answered" in notes[0], notes
    time.sleep(3)
    _, page = api(platform.http, token, "GET", f"/api/sessions/{sid}/messages/")
    assert len(page["results"]) == len(messages)  # nothing more was started
