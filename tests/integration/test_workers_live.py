"""What an operator sees of a real Celery worker in /api/workers/: it shows within seconds of
being ready, its reply task while the reply streams, the model its pool process loaded, that
model unloaded after its keep-alive, and the worker gone within 10 s of a kill -9, at once
after a graceful stop.

The worker here serves a queue of its own (an agent on node ``ops``: ``llama_cpp.ops``) with a
5 s keep-alive, beside the package's shared worker and daphne.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.integration.chat_client import Watcher, api, send, ws_open
from tests.integration.conftest import Platform
from tests.platform_shell import shell_run

pytestmark = pytest.mark.slow

KEEP_ALIVE = 5  # seconds: MODEL_CACHE_IDLE_SECONDS of this worker
LOSS_SECONDS = 10  # what the issue promises for a worker's arrival or loss

SETUP = """
import json
from django.contrib.auth.models import User
from agents.models import Agent
from sessions_app.tokens import token_create
staff, _ = User.objects.get_or_create(username="ops-staff", defaults=dict(is_staff=True))
base = Agent.objects.get(slug="assistant")
Agent.objects.update_or_create(slug="ops", defaults=dict(name="Ops", backend=base.backend, model=base.model,
    node="ops", max_tokens=160, temperature=0.0))
print(json.dumps(token_create(user=staff, name="ops")[1]))
"""


@pytest.fixture(scope="module")
def ops(platform: Platform) -> Iterator[tuple[Platform, str]]:
    """A Platform for this module's workers (same daphne, database and Redis) and a staff token."""
    token = json.loads(shell_run(platform, SETUP).strip().splitlines()[-1])
    own = Platform(env={**platform.env, "MODEL_CACHE_IDLE_SECONDS": str(KEEP_ALIVE)}, port=platform.port,
                   log_dir=platform.log_dir, tokens=platform.tokens)  # fmt: skip
    try:
        yield own, token
    finally:
        own.stop_all()


def listed(platform: Platform, token: str, pid: int) -> dict[str, Any] | None:
    """The worker whose main process is ``pid``, as /api/workers/ lists it now."""
    status, body = api(platform.http, token, "GET", "/api/workers/")
    assert status == 200, body
    return next((w for w in body["results"] if w["pid"] == pid), None)


def poll(check: Callable[[], Any], timeout: float, what: str, every: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(every)


def test_a_worker_shows_its_reply_its_model_and_its_unloading_and_leaves_within_10_s_of_a_kill(
    ops: tuple[Platform, str],
) -> None:
    platform, token = ops
    platform.start_worker("worker-ops", queues="llama_cpp.ops", concurrency=1)
    ready = time.monotonic()
    pid = platform.procs["worker-ops"].pid
    worker = poll(lambda: listed(platform, token, pid), LOSS_SECONDS, "the new worker listed")
    assert time.monotonic() - ready < LOSS_SECONDS
    assert worker["queues"] == ["llama_cpp.ops"] and worker["pool"] == "prefork" and worker["state"] == "online"
    assert worker["beat_age_seconds"] < 3
    child = poll(lambda: [p for p in listed(platform, token, pid)["processes"] if p["role"] == "child"], 10,  # type: ignore[index]
                 "its pool process listed")[0]  # fmt: skip
    assert child["rss_bytes"] > 0

    # A reply streams: its task shows, with the message it answers, in the pool process.
    status, body = api(platform.http, platform.tokens["alice"], "POST", "/api/sessions/", {"agent": "ops"})
    assert status == 201, body
    watcher = Watcher(ws_open(platform.ws, body["id"], platform.tokens["alice"]))
    watcher.recv()
    send(watcher.ws, type="message", content="Write a very long story about a lighthouse keeper and the sea.")
    reply_id = watcher.first_reply_id()
    watcher.until(lambda e: e["type"] == "delta")
    tasks = poll(lambda: listed(platform, token, pid)["tasks"], 5, "the running reply listed")  # type: ignore[index]
    assert [(t["name"], t["kwargs"], t["pid"]) for t in tasks] == [
        ("sessions_app.tasks.reply_generate", {"message_id": reply_id}, child["pid"])
    ]
    assert time.time() - tasks[0]["started_at"] < 60
    reply = watcher.until_done(reply_id)
    finished = time.time()
    watcher.close()
    assert reply.done is not None and reply.done["status"] == "complete"

    # Done: no task runs; the model it used is loaded in the pool process, then unloaded after
    # the keep-alive, and says so.
    worker = poll(lambda: (w := listed(platform, token, pid)) and not w["tasks"] and w, 5, "the reply's end")
    assert worker["tasks_done"] >= 1
    [model] = worker["models"]["loaded"]
    assert model["backend"] == "llama_cpp" and model["model"].endswith(".gguf") and model["pid"] == child["pid"]
    assert model["bytes"] > 50_000_000 and model["in_use"] == 0
    assert worker["models"]["keep_alive_seconds"] == KEEP_ALIVE

    def unloaded() -> list[dict[str, Any]]:
        w = listed(platform, token, pid)
        assert w is not None
        late = [m for m in w["models"]["unloaded"] if m["unloaded_at"] >= finished and m["model"] == model["model"]]
        return late if not w["models"]["loaded"] else []

    [gone] = poll(unloaded, KEEP_ALIVE + 8, "the model shown unloaded after its keep-alive")
    assert gone["reason"] == "idle" and gone["bytes"] == model["bytes"]
    assert gone["unloaded_at"] - finished >= KEEP_ALIVE - 1

    # kill -9 of the whole worker: no goodbye, and gone from the list within 10 s.
    platform.kill("worker-ops")
    killed = time.monotonic()
    poll(lambda: listed(platform, token, pid) is None, LOSS_SECONDS, "the killed worker gone")
    assert time.monotonic() - killed < LOSS_SECONDS


def test_a_gracefully_stopped_worker_leaves_the_list_at_once(ops: tuple[Platform, str]) -> None:
    platform, token = ops
    platform.start_worker("worker-ops-2", queues="llama_cpp.ops", concurrency=1)
    proc = platform.procs["worker-ops-2"]
    poll(lambda: listed(platform, token, proc.pid), LOSS_SECONDS, "the new worker listed")
    os.kill(proc.pid, signal.SIGTERM)  # as `docker stop` or systemd stop it: the main process only
    proc.wait(60)
    exited = time.monotonic()
    platform.procs.pop("worker-ops-2")
    poll(lambda: listed(platform, token, proc.pid) is None, 2, "the stopped worker gone", every=0.1)
    assert time.monotonic() - exited < 2
