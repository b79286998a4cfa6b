"""Redis (broker, channel layer, live buffer, rate-limit counters) SIGKILLed mid-reply and started
again, as an operator's restart or a crashed container does. A private redis-server is killed;
the machine's own is never touched.

What the user must see: the reply in flight still ends `complete` with all its text; a connected
client gets an error event and close code 4503 (the web page reconnects by itself); a handshake
during the outage gets the same instead of HTTP 500; a message sent during the outage is kept and
its reply fails with a reason (HTTP 503 says so); reads of stored chats keep working; once Redis
is back, the same daphne, worker and beat serve the next reply, without a restart.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from tests.integration.chat_client import Watcher, api, send, ws_open
from tests.integration.services import PrivateRedis, alive, private_platform, scratch_database, wait_until
from tests.integration.test_reply_streaming import ask, stored
from tools.launch import Platform

pytestmark = pytest.mark.slow

LONG = "Write a very long story about a lighthouse keeper and the sea."
FINAL = ("complete", "failed", "cancelled", "interrupted")


def closed_code(watcher: Watcher, timeout: float = 20) -> int:
    """Read until the server closes the socket; return its close code."""
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            watcher.recv(timeout=timeout)
    assert closed.value.rcvd is not None, "the server sent no close frame"
    return closed.value.rcvd.code


def handshake_during_outage(platform: Platform, session_id: int) -> tuple[dict, int]:
    ws = ws_open(platform.ws, session_id, platform.tokens["alice"])  # accepted: no HTTP 500
    watcher = Watcher(ws)
    first = watcher.recv(timeout=20)
    return first, closed_code(watcher)


@pytest.fixture
def redis_server(tmp_path: Path):  # type: ignore[no-untyped-def]
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


def test_a_redis_outage_mid_reply_loses_nothing_and_needs_no_restart(
    tmp_path: Path, redis_server: PrivateRedis
) -> None:
    with (
        scratch_database() as database_url,
        private_platform(
            tmp_path, database_url=database_url, redis_url=redis_server.url, beat=True, REPLY_STALE_SECONDS="20"
        ) as platform,
    ):
        watcher, sid, reply_id = ask(platform, LONG)
        watcher.until(lambda e: e["type"] == "delta" and e["seq"] >= 10)
        redis_server.kill()
        killed = time.monotonic()

        # The connected client is told, then closed with 4503 (not a bare 1011).
        error = watcher.until(lambda e: e["type"] == "error", timeout=20)
        assert error["code"] == "broker_unavailable" and "Redis" in error["message"]
        assert closed_code(watcher) == 4503
        seen = watcher.replies[reply_id].text
        assert seen

        # A handshake during the outage is accepted, told and closed: never HTTP 500.
        first, code = handshake_during_outage(platform, sid)
        assert first["type"] == "error" and first["code"] == "broker_unavailable" and code == 4503

        # Stored chats can still be read (the rate-limit counters are in Redis: they stay open).
        status, body = api(platform.http, platform.tokens["alice"], "GET", f"/api/sessions/{sid}/messages/")
        assert status == 200, body
        # A message sent now is kept; its reply cannot be started, and the answer says why.
        path = f"/api/sessions/{sid}/messages/"
        status, body = api(platform.http, platform.tokens["alice"], "POST", path, {"content": "Still there?"})
        assert status == 503, body
        assert body["code"] == "broker_unavailable" and "saved" in body["message"]
        # healthz names what is away.
        status, body = api(platform.http, None, "GET", "/healthz")
        assert status == 503 and body["database"] == "ok" and body["redis"].startswith("unavailable")

        time.sleep(max(0.0, 6 - (time.monotonic() - killed)))  # at least 5 s down
        redis_server.start()

        # The reply in flight ends complete, with everything the client saw and the rest.
        row = wait_until(
            lambda: (r := stored(platform, sid, reply_id)) and r["status"] in FINAL and r, 120, "the reply to end"
        )
        assert row["status"] == "complete", row
        assert row["content"].startswith(seen) and len(row["content"]) > len(seen)
        assert alive(platform) == {"daphne": True, "worker": True, "beat": True}

        status, body = api(platform.http, platform.tokens["alice"], "GET", f"/api/sessions/{sid}/messages/")
        kept = [(m["role"], m["status"], m["content"]) for m in body["results"]]
        assert kept[2][0] == "user" and kept[2][2] == "Still there?"
        assert kept[3][1] == "failed"
        failed = body["results"][3]
        assert "broker" in failed["error"]

        # Reconnecting shows the stored state; the next reply is served by the same processes.
        watcher = Watcher(ws_open(platform.ws, sid, platform.tokens["alice"]))
        snapshot = watcher.recv()
        assert snapshot["type"] == "session"
        by_id = {m["id"]: m for m in snapshot["messages"]}
        assert by_id[reply_id]["status"] == "complete" and by_id[reply_id]["content"] == row["content"]
        send(watcher.ws, type="regenerate")
        next_id = watcher.first_reply_id()
        done = watcher.until_done(next_id, timeout=120)
        assert done.done is not None and done.done["status"] == "complete" and done.text

        # A second restart, this time a quick one with a reply in flight: still no restart needed.
        send(watcher.ws, type="message", content=LONG)
        reply_two = watcher.first_reply_id()
        watcher.until(lambda e: e["type"] == "delta" and e["message_id"] == reply_two and e["seq"] >= 5)
        redis_server.kill()
        redis_server.start()
        row = wait_until(
            lambda: (r := stored(platform, sid, reply_two)) and r["status"] in FINAL and r, 120, "the second reply"
        )
        assert row["status"] == "complete"
        watcher.close()
        watcher = Watcher(wait_until(lambda: _ws_or_none(platform, sid), 30, "a websocket after the restart"))
        watcher.recv()
        send(watcher.ws, type="message", content="Say hi.")
        last = watcher.first_reply_id()
        assert watcher.until_done(last, timeout=120).done["status"] == "complete"  # type: ignore[index]
        watcher.close()
        assert alive(platform) == {"daphne": True, "worker": True, "beat": True}
        log = (platform.log_dir / "worker.log").read_text(errors="replace")
        assert "Unrecoverable error" not in log


def _ws_or_none(platform: Platform, sid: int):  # type: ignore[no-untyped-def]
    try:
        return ws_open(platform.ws, sid, platform.tokens["alice"])
    except Exception:
        return None


def test_a_channel_layer_failure_in_connect_closes_with_a_code(tmp_path: Path, redis_server: PrivateRedis) -> None:
    """Redis away before the handshake: daphne accepts, sends the error and closes with 4503."""
    with (
        scratch_database() as database_url,
        private_platform(tmp_path, database_url=database_url, redis_url=redis_server.url, worker=False) as platform,
    ):
        status, session = api(platform.http, platform.tokens["alice"], "POST", "/api/sessions/", {})
        assert status == 201
        redis_server.kill()
        first, code = handshake_during_outage(platform, session["id"])
        assert (first["type"], first["code"], code) == ("error", "broker_unavailable", 4503)
        assert json.dumps(first).count("Redis") == 1
        redis_server.start()
        watcher = Watcher(wait_until(lambda: _ws_or_none(platform, session["id"]), 30, "a websocket"))
        assert watcher.recv()["type"] == "session"
        watcher.close()


def test_a_bare_worker_outlives_a_redis_restart_with_a_reply_in_flight(
    tmp_path: Path, redis_server: PrivateRedis
) -> None:
    """`celery -A chatsite worker` with nothing else (but the queues and -l INFO): a prefork pool of
    one process per core, gossip and mingle on. With kombu's stock Redis transport this worker
    exited ("Unrecoverable error: AttributeError ... 'hostname'", chatsite/broker.py) and the next
    reply never ran."""
    with (
        scratch_database() as database_url,
        private_platform(tmp_path, database_url=database_url, redis_url=redis_server.url, bare_worker=True) as platform,
    ):
        watcher, sid, reply_id = ask(platform, LONG)
        watcher.until(lambda e: e["type"] == "delta" and e["seq"] >= 5)
        watcher.close()
        redis_server.kill()
        time.sleep(3)
        redis_server.start()
        row = wait_until(
            lambda: (r := stored(platform, sid, reply_id)) and r["status"] in FINAL and r, 120, "the reply to end"
        )
        assert row["status"] == "complete" and row["content"], row
        # The worker is still there and serves the next reply.
        path = f"/api/sessions/{sid}/messages/"
        status, body = wait_until(
            lambda: (
                (r := api(platform.http, platform.tokens["alice"], "POST", path, {"content": "Say hi."}))[0] != 503
                and r
            ),
            30,
            "the API to queue a reply again",
        )
        assert status == 202, body
        next_id = body[-1]["id"]
        nxt = wait_until(
            lambda: (r := stored(platform, sid, next_id)) and r["status"] in FINAL and r, 120, "the next reply"
        )
        assert nxt["status"] == "complete" and nxt["content"], nxt
        assert alive(platform) == {"daphne": True, "worker": True}
        log = (platform.log_dir / "worker.log").read_text(errors="replace")
        assert "Unrecoverable error" not in log, log[-4000:]
