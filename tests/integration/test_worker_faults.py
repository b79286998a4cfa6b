"""A worker killed mid-reply leaves the reply `interrupted` with its text; a redelivered task
never produces a second reply. Runs last in this package (it restarts the worker)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.integration.chat_client import Watcher, api, send, ws_open
from tests.integration.conftest import ROOT, Platform
from tests.integration.test_reply_streaming import ask, stored

pytestmark = pytest.mark.slow


def test_a_task_delivered_twice_produces_one_reply(platform: Platform) -> None:
    watcher, sid, reply_id = ask(platform, "Say hello in French.")
    first = watcher.until_done(reply_id)
    # The broker delivers the same task again (as after a lost ack).
    code = (
        "import django; django.setup()\n"
        "from sessions_app.tasks import reply_generate\n"
        f"reply_generate.apply_async(kwargs={{'message_id': {reply_id}}}, queue='llama_cpp')\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=platform.env, check=True, timeout=60)
    # The worker ran the second delivery and found nothing to claim: its log says so.
    log = platform.log_dir / "worker.log"
    deadline = time.monotonic() + 60
    while f"reply {reply_id} already claimed or finished" not in log.read_text(errors="replace"):
        assert time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
        time.sleep(0.2)
    watcher.close()
    row = stored(platform, sid, reply_id)
    assert row["status"] == "complete" and row["content"] == first.text
    status, body = api(platform.http, platform.tokens["alice"], "GET", f"/api/sessions/{sid}/messages/")
    assert [m["role"] for m in body["results"]] == ["user", "assistant"]
    assert not any(e["type"] == "delta" and e["seq"] == 1 for e in watcher.events[-3:])


def test_a_worker_killed_mid_reply_leaves_it_interrupted_with_its_text(platform: Platform) -> None:
    watcher, sid, reply_id = ask(platform, "Write a very long story about a lighthouse keeper and the sea.")
    watcher.until(lambda e: e["type"] == "delta" and e["seq"] >= 30)
    platform.kill("worker")  # SIGKILL to the whole process group: no chance to clean up
    seen = watcher.replies[reply_id].text
    time.sleep(4)  # past REPLY_STALE_SECONDS=3
    out = subprocess.run(
        [sys.executable, "manage.py", "reap_replies"], cwd=ROOT, env=platform.env, capture_output=True, text=True
    )
    assert out.returncode == 0 and "interrupted: 1" in out.stdout, out.stdout + out.stderr
    done = watcher.until_done(reply_id, timeout=30)
    watcher.close()
    assert done.done is not None and done.done["status"] == "interrupted"
    row = stored(platform, sid, reply_id)
    assert row["status"] == "interrupted"
    # Every word the client saw before the kill is kept (the stream buffer has the latest text).
    assert row["content"].startswith(seen) and len(seen) > 0
    assert row["error"]

    # A new worker picks up new work; the interrupted reply is not generated again.
    platform.start_worker()
    watcher = Watcher(ws_open(platform.ws, sid, platform.tokens["alice"]))
    watcher.recv()
    send(watcher.ws, type="message", content="Say hi.")
    next_id = watcher.first_reply_id()
    assert watcher.until_done(next_id).done["status"] == "complete"  # type: ignore[index]
    watcher.close()
    assert stored(platform, sid, reply_id)["status"] == "interrupted"
