"""API clients: a reply by polling and by server-sent events; a revoked token closes its websocket."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest
from websockets.exceptions import ConnectionClosed

from tests.integration.chat_client import Watcher, api, ws_open
from tests.integration.conftest import Platform
from tests.integration.test_reply_streaming import new_session

pytestmark = pytest.mark.slow


def sse_events(platform: Platform, path: str, token: str) -> list[tuple[str, dict]]:
    request = urllib.request.Request(platform.http + path, headers={"Authorization": f"Token {token}"})
    events = []
    with urllib.request.urlopen(request, timeout=120) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        kind = ""
        for raw in response:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                events.append((kind, json.loads(line[6:])))
                if kind in ("done", "deleted"):
                    break
    return events


def test_post_then_follow_the_reply_by_server_sent_events(platform: Platform) -> None:
    sid = new_session(platform)
    token = platform.tokens["alice"]
    status, (sent, reply) = api(
        platform.http, token, "POST", f"/api/sessions/{sid}/messages/", {"content": "Name two fruits."}
    )
    assert status == 202 and reply["status"] == "queued"
    events = sse_events(platform, f"/api/sessions/{sid}/messages/{reply['id']}/stream/", token)
    kinds = [k for k, _ in events]
    assert kinds[0] == "snapshot" and kinds[-1] == "done" and kinds.count("done") == 1
    snapshot = events[0][1]
    deltas = [d for k, d in events if k == "delta"]
    assert [d["seq"] for d in deltas] == list(range(snapshot["seq"] + 1, snapshot["seq"] + 1 + len(deltas)))
    text = snapshot["content"] + "".join(d["text"] for d in deltas)
    done = events[-1][1]
    assert done["status"] == "complete" and done["content"] == text != ""
    # Polling the message gives the same stored reply.
    _, row = api(platform.http, token, "GET", f"/api/sessions/{sid}/messages/{reply['id']}/")
    assert row["content"] == text
    # A finished reply's stream is its final state at once; another user's is a 404.
    again = sse_events(platform, f"/api/sessions/{sid}/messages/{reply['id']}/stream/", token)
    assert [k for k, _ in again] == ["snapshot", "done"]
    with pytest.raises(urllib.error.HTTPError) as denied:
        sse_events(platform, f"/api/sessions/{sid}/messages/{reply['id']}/stream/", platform.tokens["bob"])
    assert denied.value.code == 404


def test_revoking_a_token_closes_its_open_websocket(platform: Platform) -> None:
    status, made = api(platform.http, platform.tokens["alice"], "POST", "/api/tokens/", {"name": "short-lived"})
    assert status == 201
    sid = new_session(platform)
    watcher = Watcher(ws_open(platform.ws, sid, made["token"]))
    assert watcher.recv()["type"] == "session"
    assert api(platform.http, platform.tokens["alice"], "DELETE", f"/api/tokens/{made['id']}/")[0] == 204
    started = time.monotonic()
    event = watcher.recv(timeout=10)
    assert event["type"] == "error" and event["code"] == "token_revoked"
    with pytest.raises(ConnectionClosed) as closed:
        watcher.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
    assert time.monotonic() - started < 10
    # Nor can it open a new one, or call the API.
    assert api(platform.http, made["token"], "GET", "/api/sessions/")[0] == 401
