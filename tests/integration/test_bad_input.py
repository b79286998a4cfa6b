"""Bad input through every door gets a 400 (or an error event, the socket staying open) naming
the field, and changes nothing; strangers are refused.

On PostgreSQL, as deployed: it refuses a NUL in text, and psycopg cannot encode a lone surrogate,
so these reached the database as server errors before the doors checked them (SQLite stores both).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import psycopg
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


# --- NUL characters, lone surrogates, wrong types and over-long fields, through every door ------

NUL = "a\x00b"
SURROGATE = "a\ud800b"  # json.dumps writes it as the escape "\ud800", as a client would


@pytest.fixture
def rows(platform: Platform) -> Iterator[Any]:
    """Counts straight from the database, and daphne's log of this test checked for tracebacks."""
    log = platform.log_dir / "daphne.log"
    start = log.stat().st_size
    with psycopg.connect(platform.env["DATABASE_URL"], autocommit=True) as conn:

        def count(table: str, where: str, *args: Any) -> int:
            row = conn.execute(f"SELECT count(*) FROM {table} WHERE {where}", args).fetchone()  # noqa: S608
            assert row is not None
            return int(row[0])

        yield count
    with log.open("rb") as f:
        f.seek(start)
        tail = f.read().decode(errors="replace")
    assert "Traceback" not in tail and "Internal Server Error" not in tail, tail[-4000:]


def alice_sessions(count: Any) -> int:
    return int(count("sessions_app_session s JOIN auth_user u ON u.id = s.owner_id", "u.username = %s", "alice"))


def field_named(body: Any, field: str) -> bool:
    """A REST 400 names the field (or the place in it, ``compare[1]``): in ``errors`` and at the
    start of the message people read."""
    if not isinstance(body, dict) or not isinstance(body.get("errors"), dict):
        return False
    places = [field, f"{field}[", f"{field}."]
    return any(str(key).startswith(tuple(places)) for key in body["errors"]) and any(
        body["message"].startswith(f"{place}:" if place == field else place) for place in places
    )


def post_raw(platform: Platform, path: str, raw: bytes) -> tuple[int, Any]:
    request = urllib.request.Request(platform.http + path, data=raw, method="POST")
    request.add_header("Content-Type", "application/json")
    request.add_header("Authorization", f"Token {platform.tokens['alice']}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"content": NUL}, "content"),
        ({"content": SURROGATE}, "content"),
        ({"content": 5}, "content"),
        ({"content": ["hi"]}, "content"),
        ({"content": "x" * 32001}, "content"),
        ({"content": "hi", "client_id": NUL}, "client_id"),
        ({"content": "hi", "client_id": 7}, "client_id"),
        ({"content": "hi", "client_id": "c" * 101}, "client_id"),
        ({"content": "hi", "agent": SURROGATE}, "agent"),
        ({"content": "hi", "agent": 5}, "agent"),
        ({"content": "hi", "compare": ["assistant", NUL]}, "compare"),
        ({"content": "hi", NUL: "x"}, '["a\\u0000b"]'),
    ],
)
def test_rest_messages_refuse_bad_text_and_types(platform: Platform, rows: Any, body: dict, field: str) -> None:
    sid = new_session(platform)
    status, answer = api(platform.http, platform.tokens["alice"], "POST", f"/api/sessions/{sid}/messages/", body)
    assert status == 400 and field_named(answer, field), (status, answer)
    assert rows("sessions_app_message", "session_id = %s", sid) == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"agent": "assistant", "title": NUL}, "title"),
        ({"agent": "assistant", "title": SURROGATE}, "title"),
        ({"agent": "assistant", "title": 5}, "title"),
        ({"agent": "assistant", "title": "t" * 201}, "title"),
        ({"agent": 5}, "agent"),
        ({"agents": ["assistant", 5]}, "agents"),
        ({"agent": "assistant", "turn_policy": {"kind": NUL}}, "turn_policy.kind"),
        ({"agent": "assistant", "turn_policy": {NUL: "manual"}}, "turn_policy"),
        ({"agent": "assistant", "turn_policy": {"kind": "debate", "judge": SURROGATE}}, "turn_policy.judge"),
    ],
)
def test_rest_session_create_refuses_bad_text_and_types(platform: Platform, rows: Any, body: dict, field: str) -> None:
    before = alice_sessions(rows)
    status, answer = api(platform.http, platform.tokens["alice"], "POST", "/api/sessions/", body)
    assert status == 400 and field_named(answer, field), (status, answer)
    assert alice_sessions(rows) == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"title": NUL}, "title"),
        ({"title": SURROGATE}, "title"),
        ({"title": 5}, "title"),
        ({"title": "t" * 201}, "title"),
        ({"turn_policy": {"kind": "round_robin", "rounds": 1, NUL: 1}}, "turn_policy"),
    ],
)
def test_rest_session_rename_refuses_bad_text_and_types(platform: Platform, rows: Any, body: dict, field: str) -> None:
    sid = new_session(platform)
    status, answer = api(platform.http, platform.tokens["alice"], "PATCH", f"/api/sessions/{sid}/", body)
    assert status == 400 and field_named(answer, field), (status, answer)
    assert rows("sessions_app_session", "id = %s AND title = '' AND turn_policy->>'kind' = 'manual'", sid) == 1


@pytest.mark.parametrize("content", [NUL, SURROGATE, 5])
def test_rest_message_edit_refuses_bad_text_and_types(platform: Platform, rows: Any, content: Any) -> None:
    sid = new_session(platform)
    token = platform.tokens["alice"]
    status, sent = api(platform.http, token, "POST", f"/api/sessions/{sid}/messages/", {"content": "Say hi."})
    assert status == 202, sent
    user_message = sent[0]["id"]
    status, answer = api(
        platform.http, token, "PATCH", f"/api/sessions/{sid}/messages/{user_message}/", {"content": content}
    )
    assert status == 400 and field_named(answer, "content"), (status, answer)
    assert rows("sessions_app_message", "id = %s AND content = %s", user_message, "Say hi.") == 1


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "assistant", "messages": [{"role": "user", "content": NUL}]}, "messages[0].content"),
        ({"model": "assistant", "messages": [{"role": "user", "content": SURROGATE}]}, "messages[0].content"),
        (
            {"model": "assistant", "messages": [{"role": "user", "content": [{"type": "text", "text": NUL}]}]},
            "messages[0].content[0].text",
        ),
        ({"model": "assistant", "messages": [{"role": "user", "content": "hi"}], "stop": [NUL]}, "stop[0]"),
        ({"model": NUL, "messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({"model": "assistant", "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"model": "assistant", "messages": [{"role": "user", "content": "x" * 32001}]}, "messages"),
    ],
)
def test_v1_chat_completions_refuse_bad_text_and_types(platform: Platform, rows: Any, body: dict, param: str) -> None:
    before = alice_sessions(rows)
    status, answer = api(platform.http, platform.tokens["alice"], "POST", "/v1/chat/completions", body)
    assert status == 400, (status, answer)
    error = answer["error"]
    assert error["param"] == param and error["message"], error
    assert alice_sessions(rows) == before


@pytest.mark.parametrize(
    ("frame", "field"),
    [
        ({"type": "message", "content": NUL}, "content"),
        ({"type": "message", "content": SURROGATE}, "content"),
        ({"type": "message", "content": "hi", "client_id": NUL}, "client_id"),
        ({"type": "message", "content": "hi", "params": {"system_prompt": NUL}}, "params.system_prompt"),
        ({"type": "message", "content": "hi", "compare": ["assistant", SURROGATE]}, "compare[1]"),
        ({"type": "edit", "message_id": 1, "content": NUL}, "content"),
        ({"type": NUL}, "type"),
    ],
)
def test_websocket_frames_with_bad_text_get_an_error_event(
    platform: Platform, rows: Any, frame: dict, field: str
) -> None:
    sid = new_session(platform)
    watcher = Watcher(ws_open(platform.ws, sid, platform.tokens["alice"]))
    watcher.recv()
    send(watcher.ws, **frame)
    event = watcher.recv(timeout=20)
    assert event["type"] == "error" and event["code"] == "invalid_text", event
    assert event["message"].startswith(f"{field}: contains a "), event
    # The socket stays open and usable.
    send(watcher.ws, type="ping")
    assert watcher.recv(timeout=20)["type"] == "pong"
    watcher.close()
    assert rows("sessions_app_message", "session_id = %s", sid) == 0


def test_a_frame_nested_too_deeply_gets_an_error_event(platform: Platform, rows: Any) -> None:
    sid = new_session(platform)
    watcher = Watcher(ws_open(platform.ws, sid, platform.tokens["alice"]))
    watcher.recv()
    watcher.ws.send('{"type": "message", "content": ' + "[" * 100_000 + "]" * 100_000 + "}")
    event = watcher.recv(timeout=20)
    assert event["type"] == "error" and event["code"] == "bad_json", event
    send(watcher.ws, type="ping")
    assert watcher.recv(timeout=20)["type"] == "pong"
    watcher.close()


@pytest.mark.parametrize("path", ["/api/sessions/", "/v1/chat/completions"])
def test_a_body_nested_too_deeply_is_a_400(platform: Platform, rows: Any, path: str) -> None:
    before = alice_sessions(rows)
    status, answer = post_raw(platform, path, b"[" * 200_000 + b"]" * 200_000)
    assert status == 400, (status, answer)
    assert alice_sessions(rows) == before
