"""The beats in the real Redis: a worker's main process and a forked pool child each write their
own key, the list merges them, a stopped worker leaves at once and a silent one when its key
expires. Keys live under a prefix of their own, so nothing else on this Redis is touched."""

from __future__ import annotations

import multiprocessing
import os
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from inference import workers
from inference.workers import workers_online

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def beats(settings: Any, monkeypatch: pytest.MonkeyPatch, db: Any) -> Iterator[redis.Redis]:
    """Distributed mode on the machine's Redis, fast beats (the constants are tested elsewhere)."""
    settings.EMBEDDED = False
    settings.REDIS_URL = REDIS_URL
    prefix = f"chatsite-test-{uuid.uuid4().hex[:8]}:worker:"
    monkeypatch.setattr(workers, "KEY_PREFIX", prefix)
    monkeypatch.setattr(workers, "WORKER_BEAT_SECONDS", 0.2)
    monkeypatch.setattr(workers, "WORKER_BEAT_TTL", 1)
    monkeypatch.setattr(workers, "_beat", None)
    monkeypatch.setattr(workers, "_identity", {})
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    workers.worker_beat_stop()
    for key in client.scan_iter(match=prefix + "*"):
        client.delete(key)


def wait_for(check: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def pool_child(ready: Any, stop: Any) -> None:
    """What a prefork pool child does: beat on its own and run a task."""
    workers.worker_process_beat_start()
    workers.worker_task_started(task_id="t-9", name="sessions_app.tasks.reply_generate", kwargs={"message_id": 9})
    ready.set()
    stop.wait(20)
    workers.worker_task_finished(task_id="t-9")
    workers.worker_process_beat_stop(pid=os.getpid())


def test_a_worker_and_its_pool_child_show_as_one_entry(beats: redis.Redis) -> None:
    workers.worker_identity_set(hostname="w1@box")
    workers.worker_beat_start(hostname="w1@box", queues=["llama_cpp"], pool="prefork", concurrency=1)
    [worker] = wait_for(workers_online)
    assert worker["hostname"] == "w1@box" and worker["pid"] == os.getpid()
    assert [p["role"] for p in worker["processes"]] == ["main"]

    context = multiprocessing.get_context("fork")
    ready, stop = context.Event(), context.Event()
    child = context.Process(target=pool_child, args=(ready, stop))
    child.start()
    try:
        assert ready.wait(10)

        def child_with_task() -> Any:
            found = workers_online()
            return found and len(found[0]["processes"]) == 2 and found[0]["tasks"] and found[0]

        worker = wait_for(child_with_task)
        assert [(p["role"], p["pid"]) for p in worker["processes"]] == [("main", os.getpid()), ("child", child.pid)]
        assert worker["tasks"][0]["kwargs"] == {"message_id": 9} and worker["tasks"][0]["pid"] == child.pid
        assert worker["rss_bytes"] == sum(p["rss_bytes"] for p in worker["processes"])
    finally:
        stop.set()
        child.join(10)
    # The child's graceful exit removed its key at once (not after its TTL).
    assert not list(beats.scan_iter(match=workers.KEY_PREFIX + "*" + workers.PROC_INFIX + "*"))
    assert [p["role"] for p in workers_online()[0]["processes"]] == ["main"]


def test_a_graceful_stop_removes_the_worker_at_once(beats: redis.Redis) -> None:
    workers.worker_beat_start(hostname="w2@box", queues=["jobs"], pool="threads", concurrency=2)
    wait_for(workers_online)
    # A pool child's key, as a child that has not exited yet would leave it.
    beats.set(workers.KEY_PREFIX + "w2@box" + workers.PROC_INFIX + "4242", "{}", ex=60)
    workers.worker_beat_stopping()
    assert wait_for(lambda: workers_online()[0]["state"] == "stopping")
    workers.worker_beat_stop()
    assert workers_online() == []
    assert not list(beats.scan_iter(match=workers.KEY_PREFIX + "*"))
    time.sleep(0.5)  # its beat thread does not bring it back
    assert workers_online() == []


def test_a_worker_that_stops_beating_leaves_when_its_key_expires(beats: redis.Redis) -> None:
    workers.worker_beat_start(hostname="w3@box", queues=["llama_cpp"])
    wait_for(workers_online)
    beat = workers._beat
    assert beat is not None
    beat._stopped = True  # as a process frozen or killed: no more beats, no goodbye
    silent_since = time.monotonic()
    wait_for(lambda: workers_online() == [], timeout=workers.WORKER_BEAT_TTL + 2)
    assert time.monotonic() - silent_since <= workers.WORKER_BEAT_TTL + 0.5


def test_the_main_process_told_of_a_pool_process_exit_removes_its_key_and_keeps_beating(
    beats: redis.Redis,
) -> None:
    workers.worker_identity_set(hostname="w4@box")
    workers.worker_beat_start(hostname="w4@box", queues=["llama_cpp"])
    wait_for(workers_online)
    child_key = workers.KEY_PREFIX + "w4@box" + workers.PROC_INFIX + "4343"
    beats.set(child_key, '{"hostname": "w4@box", "pid": 4343}', ex=60)
    workers.worker_process_beat_stop(pid=4343)
    assert not beats.exists(child_key)
    time.sleep(0.5)
    [worker] = workers_online()
    assert worker["hostname"] == "w4@box" and worker["beat_age_seconds"] < 0.5
