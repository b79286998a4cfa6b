"""Each worker process records the task it runs now (Celery's task_prerun / task_postrun) and
counts those it finished; the embedded default's reply threads record theirs the same way."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from chatsite.celery import app
from inference import workers
from inference.workers import process_state, worker_task, workers_online

seen_inside: list[list[dict[str, Any]]] = []


@app.task(name="tests.inference.look_at_myself")
def look_at_myself(*, message_id: int, note: str = "") -> None:
    seen_inside.append(process_state()["tasks"])


def test_a_running_task_is_recorded_with_its_name_id_and_arguments() -> None:
    seen_inside.clear()
    done_before = process_state()["tasks_done"]
    result = look_at_myself.apply(kwargs={"message_id": 12, "note": "x" * 500}, task_id="task-12")
    assert result.successful()
    [running] = seen_inside
    [task] = running
    assert task["name"] == "tests.inference.look_at_myself" and task["id"] == "task-12"
    assert task["kwargs"]["message_id"] == 12
    assert len(task["kwargs"]["note"]) == 80  # a long argument is cut, not shipped whole
    assert task["started_at"] > 0
    # Finished: no longer running, and counted.
    assert process_state()["tasks"] == []
    assert process_state()["tasks_done"] == done_before + 1


def test_a_failing_task_is_no_longer_shown_as_running() -> None:
    @app.task(name="tests.inference.fails")
    def fails() -> None:
        raise RuntimeError("boom")

    result = fails.apply()
    assert result.failed()
    assert [t for t in process_state()["tasks"] if t["name"] == "tests.inference.fails"] == []


def test_arguments_that_are_not_plain_values_are_shown_by_their_type() -> None:
    workers.worker_task_started(task_id="t-obj", name="n", kwargs={"blob": object(), "n": None, "f": 1.5})
    try:
        [task] = [t for t in process_state()["tasks"] if t["id"] == "t-obj"]
        assert task["kwargs"] == {"blob": "object", "n": None, "f": 1.5}
    finally:
        workers.worker_task_finished(task_id="t-obj")


@pytest.mark.django_db
def test_an_embedded_reply_shows_as_a_running_task_of_the_embedded_worker() -> None:
    inside = threading.Event()
    release = threading.Event()

    def reply() -> None:
        with worker_task(name="sessions_app.tasks.reply_generate", kwargs={"message_id": 7}):
            inside.set()
            release.wait(10)

    thread = threading.Thread(target=reply)
    thread.start()
    try:
        assert inside.wait(10)
        [worker] = workers_online()
        assert [(t["name"], t["kwargs"]) for t in worker["tasks"]] == [
            ("sessions_app.tasks.reply_generate", {"message_id": 7})
        ]
    finally:
        release.set()
        thread.join(10)
    [worker] = workers_online()
    assert worker["tasks"] == []
