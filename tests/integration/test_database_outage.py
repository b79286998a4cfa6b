"""PostgreSQL restarted mid-reply, as a failover or an operator's restart does. A private cluster
(``initdb`` in a temporary folder, run as the ``postgres`` user) is stopped with ``-m immediate``;
the machine's own PostgreSQL is never touched.

What the user must see: the reply goes on streaming through the outage and is stored whole and
`complete`; if the database stays away past the reply's end, the reply ends `interrupted` with
every word the client saw once the database is back; requests during the outage get a 503 saying
the database is away (REST, OpenAI-style and web), a websocket handshake gets an error event and
close code 4503; afterwards everything works again without restarting anything.
"""

from __future__ import annotations

import http.cookiejar
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.chat_client import Watcher, api, ws_open
from tests.integration.services import PrivatePostgres, PrivateRedis, alive, private_platform, wait_until
from tests.integration.test_broker_outage import FINAL, LONG, closed_code
from tests.integration.test_reply_streaming import ask, stored
from tools.launch import ROOT, Platform

pytestmark = pytest.mark.slow


@pytest.fixture
def services(tmp_path: Path) -> Iterator[tuple[PrivatePostgres, PrivateRedis]]:
    postgres = PrivatePostgres()
    postgres.create()
    redis = PrivateRedis(tmp_path)
    redis.start()
    try:
        yield postgres, redis
    finally:
        redis.stop()
        postgres.remove()


def browser(platform: Platform, user: str = "alice") -> urllib.request.OpenerDirector:
    """A cookie-keeping client signed in through the login form, as a browser is."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    opener.open(platform.http + "/login/", timeout=30).read()
    csrf = next(c.value for c in jar if c.name == "csrftoken")
    form = urllib.parse.urlencode(
        {"username": user, "password": f"{user}-password-1", "csrfmiddlewaretoken": csrf}
    ).encode()
    request = urllib.request.Request(platform.http + "/login/", data=form, headers={"Referer": platform.http + "/"})
    opener.open(request, timeout=30).read()
    assert any(c.name == "sessionid" for c in jar), "login failed"
    return opener


def web_status(opener: urllib.request.OpenerDirector, url: str) -> tuple[int, str]:
    try:
        with opener.open(url, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_a_postgres_restart_mid_reply_stores_the_whole_reply(
    tmp_path: Path, services: tuple[PrivatePostgres, PrivateRedis]
) -> None:
    postgres, redis = services
    with private_platform(tmp_path, database_url=postgres.url, redis_url=redis.url) as platform:
        token = platform.tokens["alice"]
        web = browser(platform)
        watcher, sid, reply_id = ask(platform, LONG)
        watcher.until(lambda e: e["type"] == "delta" and e["seq"] >= 10)
        postgres.stop("immediate")
        stopped = time.monotonic()
        at_stop = len(watcher.replies[reply_id].text)

        # During the outage: a clear 503 on every door, and no 500 page.
        status, body = api(platform.http, token, "GET", "/api/sessions/")
        assert status == 503 and body["code"] == "database_unavailable", body
        assert "database is unavailable" in body["message"]
        status, body = api(platform.http, token, "GET", "/v1/models")
        assert status == 503 and body["error"]["code"] == "database_unavailable", body
        status, page = web_status(web, platform.http + "/")
        assert status == 503 and "Back in a moment" in page and "database is unavailable" in page
        status, body = api(platform.http, None, "GET", "/healthz")
        assert status == 503 and body["database"].startswith("unavailable") and body["redis"] == "ok"
        handshake = Watcher(ws_open(platform.ws, sid, token))
        first = handshake.recv(timeout=20)
        assert (first["type"], first["code"]) == ("error", "database_unavailable")
        assert closed_code(handshake) == 4503

        # The connected client keeps receiving the reply: generation did not stop.
        watcher.until(lambda e: e["type"] == "delta" and len(watcher.replies[reply_id].text) > at_stop + 50)
        time.sleep(max(0.0, 3 - (time.monotonic() - stopped)))
        postgres.start()

        done = watcher.until_done(reply_id, timeout=120)
        watcher.close()
        assert done.done is not None and done.done["status"] == "complete"
        row = stored(platform, sid, reply_id)
        assert row["status"] == "complete"
        assert row["content"] == done.text and len(row["content"]) > at_stop

        # Everything works again without a restart.
        status, body = api(platform.http, token, "GET", "/api/sessions/")
        assert status == 200, body
        status, page = web_status(web, platform.http + "/")
        assert status == 200 and "Back in a moment" not in page
        watcher, sid, next_id = ask(platform, "Say hi.")
        assert watcher.until_done(next_id, timeout=120).done["status"] == "complete"  # type: ignore[index]
        watcher.close()
        assert all(alive(platform).values())


def test_a_database_down_past_the_reply_end_leaves_it_interrupted_with_every_word(
    tmp_path: Path, services: tuple[PrivatePostgres, PrivateRedis]
) -> None:
    postgres, redis = services
    with private_platform(
        tmp_path, database_url=postgres.url, redis_url=redis.url, REPLY_DB_RETRY_SECONDS="2", REPLY_STALE_SECONDS="4"
    ) as platform:
        watcher, sid, reply_id = ask(platform, LONG)
        watcher.until(lambda e: e["type"] == "delta" and e["seq"] >= 10)
        postgres.stop("immediate")
        log = platform.log_dir / "worker.log"
        # The reply ends while the database is away; the worker gives up its final write.
        wait_until(lambda: "stayed unavailable" in log.read_text(errors="replace"), 120, "the final write to give up")
        # Read what the client was sent: every delta, then the follower's database check fails
        # and the socket is closed with 4503 (no `done` came: the end could not be stored).
        assert closed_code(watcher, timeout=30) == 4503
        seen = watcher.replies[reply_id].text
        assert watcher.replies[reply_id].done is None
        postgres.start()
        time.sleep(5)  # past REPLY_STALE_SECONDS: the heartbeat stopped with the reply
        out = subprocess.run(
            [sys.executable, "manage.py", "reap_replies"], cwd=ROOT, env=platform.env, capture_output=True, text=True
        )
        assert out.returncode == 0 and "interrupted: 1" in out.stdout, out.stdout + out.stderr
        row = stored(platform, sid, reply_id)
        assert row["status"] == "interrupted" and row["status"] in FINAL
        # Every token generated, the ones streamed during the outage included, is kept.
        assert row["content"] == seen and len(seen) > 200
        assert all(alive(platform).values())
