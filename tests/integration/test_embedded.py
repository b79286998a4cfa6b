"""The README's run command: daphne alone, SQLite, replies in-process, no Redis."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.integration.chat_client import Watcher, api, send, ws_open
from tests.platform_setup import prepare
from tools.launch import Platform, free_port, platform_env

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    data = tmp_path_factory.mktemp("embedded")
    env = platform_env(data_dir=data, database_url=None, redis_url=None)
    logs = data / "logs"
    logs.mkdir()
    platform = Platform(env=env, port=free_port(), log_dir=logs)
    platform.tokens = prepare(env, ("alice",))
    platform.start_daphne()
    yield platform
    platform.stop_all()


def test_the_embedded_default_streams_a_reply_with_no_redis(embedded: Platform) -> None:
    status, body = api(embedded.http, None, "GET", "/healthz")
    assert status == 200 and body["mode"] == "embedded"
    status, session = api(embedded.http, embedded.tokens["alice"], "POST", "/api/sessions/", {})
    assert status == 201 and session["agent"] == "assistant"
    sid = session["id"]
    watcher = Watcher(ws_open(embedded.ws, sid, embedded.tokens["alice"]))
    watcher.recv()
    send(watcher.ws, type="message", content="What is the capital of France?", client_id=str(uuid.uuid4()))
    reply_id = watcher.first_reply_id()
    reply = watcher.until_done(reply_id)
    assert reply.done is not None and reply.done["status"] == "complete"
    assert len(reply.deltas) >= 2

    # A second client joining mid-reply in embedded mode gets the same text.
    send(watcher.ws, type="message", content="Now write a long poem about Paris.")
    second_id = watcher.first_reply_id()
    watcher.until(lambda e: e["type"] == "delta" and e["message_id"] == second_id and e["seq"] >= 3)
    late = Watcher(ws_open(embedded.ws, sid, embedded.tokens["alice"]))
    late.recv()
    a = watcher.until_done(second_id)
    b = late.until_done(second_id)
    watcher.close(), late.close()
    assert a.text == b.text

    status, row = api(embedded.http, embedded.tokens["alice"], "GET", f"/api/sessions/{sid}/messages/{reply_id}/")
    assert row["status"] == "complete" and row["content"] == reply.text and "Paris" in row["content"]
