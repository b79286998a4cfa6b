"""One entry per worker from its main process's beat and its pool children's: their memory added
up, their models and running tasks listed with the process that holds them."""

from __future__ import annotations

from typing import Any

import pytest

from inference import workers
from inference.workers import WORKER_BEAT_SECONDS, WORKER_BEAT_TTL, workers_merge, workers_online

NOW = 1_000_000.0


def main_beat(**extra: Any) -> dict[str, Any]:
    return {"hostname": "w1@box", "queues": ["llama_cpp"], "pool": "prefork", "concurrency": 2, "host": "box",
            "state": "online", "pid": 100, "rss_bytes": 80_000_000, "started_at": NOW - 60, "beat_at": NOW - 1.5,
            "models": {"loaded": [], "unloaded": [], "keep_alive_seconds": None}, "tasks": [], "tasks_done": 0,
            **extra}  # fmt: skip


def child_beat(pid: int, **extra: Any) -> dict[str, Any]:
    return {"hostname": "w1@box", "worker_pid": 100, "pid": pid, "rss_bytes": 300_000_000, "started_at": NOW - 59,
            "beat_at": NOW - 0.5, "models": {"loaded": [], "unloaded": [], "keep_alive_seconds": 900.0},
            "tasks": [], "tasks_done": 0, **extra}  # fmt: skip


SMOL = {"backend": "llama_cpp", "model": "/models/smol.gguf", "bytes": 98_000_000}
REPLY = {"id": "t1", "name": "sessions_app.tasks.reply_generate", "kwargs": {"message_id": 12}, "started_at": NOW - 3}


def test_a_worker_shows_the_models_and_tasks_of_its_pool_processes() -> None:
    busy = child_beat(
        101,
        models={"loaded": [{**SMOL, "idle_seconds": 0.0, "in_use": 1}], "unloaded": [], "keep_alive_seconds": 900.0},
        tasks=[REPLY],
        tasks_done=4,
    )
    idle = child_beat(102, tasks_done=2, rss_bytes=120_000_000)
    [worker] = workers_merge([main_beat()], [idle, busy], now=NOW)

    assert worker["hostname"] == "w1@box" and worker["queues"] == ["llama_cpp"] and worker["state"] == "online"
    assert [(p["pid"], p["role"]) for p in worker["processes"]] == [(100, "main"), (101, "child"), (102, "child")]
    assert worker["rss_bytes"] == 80_000_000 + 300_000_000 + 120_000_000
    assert worker["models"]["loaded"] == [{**SMOL, "idle_seconds": 0.0, "in_use": 1, "pid": 101}]
    assert worker["models"]["keep_alive_seconds"] == 900.0
    assert worker["tasks"] == [{**REPLY, "pid": 101}]
    assert worker["tasks_done"] == 6
    assert worker["beat_age_seconds"] == 1.5  # the main process's beat: the worker's liveness
    assert [p["beat_age_seconds"] for p in worker["processes"]] == [1.5, 0.5, 0.5]


def test_unloaded_models_of_all_processes_are_listed_oldest_first_and_bounded() -> None:
    def gone(i: int) -> dict[str, Any]:
        return {**SMOL, "model": f"/models/m{i}.gguf", "unloaded_at": NOW - 100 + i, "reason": "idle"}

    a = child_beat(101, models={"loaded": [], "unloaded": [gone(i) for i in range(0, 30, 2)]})
    b = child_beat(102, models={"loaded": [], "unloaded": [gone(i) for i in range(1, 30, 2)]})
    [worker] = workers_merge([main_beat()], [a, b], now=NOW)
    unloaded = worker["models"]["unloaded"]
    assert len(unloaded) == workers.UNLOADED_SHOWN == 20
    assert [m["model"] for m in unloaded] == [f"/models/m{i}.gguf" for i in range(10, 30)]
    assert {m["pid"] for m in unloaded} == {101, 102}


def test_a_thread_pool_worker_shows_what_its_main_process_holds() -> None:
    main = main_beat(
        pool="threads",
        models={"loaded": [{**SMOL, "idle_seconds": 4.0, "in_use": 0}], "unloaded": [], "keep_alive_seconds": 60.0},
        tasks=[{"id": "j", "name": "pipeline.tasks.job_run", "kwargs": {"job_id": 3}, "started_at": NOW}],
    )
    [worker] = workers_merge([main], [], now=NOW)
    assert [p["role"] for p in worker["processes"]] == ["main"]
    assert worker["models"]["loaded"][0]["pid"] == 100 and worker["tasks"][0]["kwargs"] == {"job_id": 3}
    assert worker["rss_bytes"] == 80_000_000


def test_pool_processes_of_a_dead_worker_are_not_added_to_the_one_that_replaced_it() -> None:
    old_child = child_beat(55, worker_pid=50, tasks=[{"id": "x", "name": "n", "kwargs": {}, "started_at": NOW}])
    stranger = child_beat(201, hostname="w2@box", worker_pid=200)
    [worker] = workers_merge([main_beat()], [old_child, stranger, child_beat(101)], now=NOW)
    assert [p["pid"] for p in worker["processes"]] == [100, 101]
    assert worker["tasks"] == []


def test_pool_processes_without_their_main_process_make_no_worker() -> None:
    # The main process was killed: its worker is gone even while a child's key lives on.
    assert workers_merge([], [child_beat(101)], now=NOW) == []


def test_a_lost_worker_leaves_the_list_within_ten_seconds() -> None:
    # Its last beat was at most one interval before it died; the key lives TTL after that beat,
    # and the workers page reads the list every 2 s.
    assert WORKER_BEAT_SECONDS < WORKER_BEAT_TTL
    assert WORKER_BEAT_TTL + 2 <= 10
    assert WORKER_BEAT_TTL >= 2 * WORKER_BEAT_SECONDS  # one missed beat does not drop a busy worker


@pytest.mark.django_db
def test_the_embedded_default_is_one_worker_taking_every_queue(settings: Any) -> None:
    assert settings.EMBEDDED
    [worker] = workers_online()
    assert worker["hostname"] == "embedded" and worker["queues"] == ["*"] and worker["state"] == "online"
    assert [p["role"] for p in worker["processes"]] == ["main"]
    assert worker["rss_bytes"] and worker["rss_bytes"] > 10_000_000
    assert worker["beat_age_seconds"] == 0.0
    assert worker["jobs"] == [] and isinstance(worker["tasks"], list)
