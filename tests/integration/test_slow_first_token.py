"""A reply whose first token takes longer than REPLY_STALE_SECONDS is not reaped while its worker
lives: an ``openai_compat`` agent on a slow OpenAI-compatible server on loopback, served by a real
Celery worker, with the reaper run again and again while the server says nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.integration.chat_client import Watcher, api, send, ws_open
from tests.integration.conftest import ROOT, Platform, free_port
from tests.integration.test_reply_streaming import stored
from tests.platform_shell import shell_run

pytestmark = pytest.mark.slow

SILENCE_SECONDS = 9.0  # three times the platform's REPLY_STALE_SECONDS
WORDS = ["The ", "answer ", "took ", "its ", "time."]


class SlowOpenAI(BaseHTTPRequestHandler):
    """An OpenAI-compatible server that thinks for a long while before it streams."""

    def log_message(self, *args: Any) -> None:
        pass

    def _json(self, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self._json({"object": "list", "data": [{"id": "slow", "object": "model", "owned_by": "test"}]})

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        time.sleep(SILENCE_SECONDS)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for i, word in enumerate(WORDS):
            finish = "stop" if i == len(WORDS) - 1 else None
            chunk = {
                "id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "slow",
                "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": finish}],
            }  # fmt: skip
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()
            time.sleep(0.05)
        self.wfile.write(b"data: [DONE]\n\n")


@pytest.fixture(scope="module")
def slow_agent(platform: Platform) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), SlowOpenAI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    shell_run(
        platform,
        "from agents.models import Agent\n"
        f"Agent.objects.update_or_create(slug='slow', defaults=dict(name='Slow', backend='openai_compat', "
        f"backend_options={{'base_url': {url!r}}}))",
    )  # fmt: skip
    platform.start_worker("worker-compat", queues="openai_compat", pool="threads", concurrency=4)
    try:
        yield "slow"
    finally:
        platform.kill("worker-compat")
        server.shutdown()


def reap(platform: Platform) -> str:
    out = subprocess.run(
        [sys.executable, "manage.py", "reap_replies"], cwd=ROOT, env=platform.env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_a_reply_waiting_for_its_first_token_is_not_reaped(platform: Platform, slow_agent: str) -> None:
    status, body = api(platform.http, platform.tokens["alice"], "POST", "/api/sessions/", {"agent": slow_agent})
    assert status == 201, body
    sid = body["id"]
    watcher = Watcher(ws_open(platform.ws, sid, platform.tokens["alice"]))
    watcher.recv()
    send(watcher.ws, type="message", content="Take your time.")
    reply_id = watcher.first_reply_id()
    watcher.until(lambda e: e["type"] == "message" and e["message"]["status"] == "streaming")
    reaps = []
    deadline = time.monotonic() + SILENCE_SECONDS - 1
    while time.monotonic() < deadline:  # what beat does every 15 s, as often as it can
        reaps.append(reap(platform))
        time.sleep(0.5)
    done = watcher.until_done(reply_id, timeout=60)
    send(watcher.ws, type="ping")
    watcher.until(lambda e: e["type"] == "pong")
    watcher.close()

    assert reaps and set(reaps) == {"interrupted: 0"}, reaps
    assert done.done is not None and done.done["status"] == "complete"
    assert done.text == "".join(WORDS)
    ours = [e["type"] for e in watcher.events if e.get("message_id") == reply_id]
    assert ours.count("done") == 1 and ours[-1] == "done"  # one done, and no delta after it
    row = stored(platform, sid, reply_id)
    assert (row["status"], row["content"]) == ("complete", "".join(WORDS))
    assert row["stats"]["ttft_ms"] >= (SILENCE_SECONDS - 1) * 1000
