"""Bad input over the websocket gets an error event and changes nothing; strangers are refused."""

from __future__ import annotations

import json

import pytest
from websockets.exceptions import InvalidStatus

from tests.integration.chat_client import Watcher, api, send, ws_open
from tests.integration.conftest import Platform
from tests.integration.test_reply_streaming import new_session

pytestmark = pytest.mark.slow


def message_count(platform: Platform, sid: int) -> int:
    status, body = api(platform.http, platform.tokens["alice"], "GET", f"/api/sessions/{sid}/messages/")
    assert status == 200
    return int(body["count"])


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ('{"type": "message", "content": ""}', "empty_content"),
        ('{"type": "message", "content": "   "}', "empty_content"),
        ('{"type": "message", "content": 42}', "invalid_content"),
        (json.dumps({"type": "message", "content": "x" * 40000}), "content_too_long"),
        ('{"type": "message", "content": "hi", "agent": "no-such-agent"}', "unknown_agent"),
        ('{"type": "message", "content": "hi", "client_id": ""}', "invalid_client_id"),
        ("{not json", "bad_json"),
        ("[1, 2]", "bad_json"),
        ('{"type": "dance"}', "unknown_type"),
        ('{"type": "stop", "message_id": "seven"}', "invalid_message_id"),
    ],
)
def test_bad_frames_get_an_error_event_and_change_nothing(platform: Platform, frame: str, code: str) -> None:
    sid = new_session(platform)
    watcher = Watcher(ws_open(platform.ws, sid, platform.tokens["alice"]))
    watcher.recv()
    watcher.ws.send(frame)
    event = watcher.recv(timeout=20)
    assert event["type"] == "error" and event["code"] == code, event
    assert event["message"]
    # The connection stays usable.
    send(watcher.ws, type="ping")
    assert watcher.recv(timeout=20)["type"] == "pong"
    watcher.close()
    assert message_count(platform, sid) == 0


def test_a_session_of_another_user_is_refused(platform: Platform) -> None:
    sid = new_session(platform, "alice")
    with pytest.raises(InvalidStatus) as refused:
        ws_open(platform.ws, sid, platform.tokens["bob"])
    assert refused.value.response.status_code == 403
    assert message_count(platform, sid) == 0


@pytest.mark.parametrize("token", [None, "not-a-token"])
def test_no_or_a_bad_token_is_refused(platform: Platform, token: str | None) -> None:
    sid = new_session(platform, "alice")
    with pytest.raises(InvalidStatus):
        ws_open(platform.ws, sid, token)


def test_a_foreign_origin_is_refused(platform: Platform) -> None:
    sid = new_session(platform, "alice")
    with pytest.raises(InvalidStatus):
        ws_open(platform.ws, sid, platform.tokens["alice"], Origin="https://evil.example.com")


def test_the_sites_own_origin_is_accepted(platform: Platform) -> None:
    sid = new_session(platform, "alice")
    ws = ws_open(platform.ws, sid, platform.tokens["alice"], Origin=f"http://127.0.0.1:{platform.port}")
    assert json.loads(ws.recv(timeout=20))["type"] == "session"
    ws.close()
