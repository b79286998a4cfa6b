"""The task runtime on its own: a row is claimed once, one heartbeat thread keeps every held row
alive and notices one taken away, the reaper ends only rows whose lease lapsed, and a task is
sent by name to Celery or run in an embedded lane.

The rows are jobs (a table of the inference layer) seen through tables defined here, so these
run without the apps that use the runtime.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from django.db import OperationalError
from django.utils import timezone

from inference.models import Job
from inference.runtime import identity, pool
from inference.runtime.leases import Leased, claim, heartbeat
from inference.runtime.reaper import reap

pytestmark = pytest.mark.django_db(transaction=True)

FAST = Leased("job", Job, Job.Status.RUNNING, period=lambda: 0.2)


def running(**fields: Any) -> Job:
    return Job.objects.create(kind="evaluate", status=Job.Status.RUNNING, worker=identity.worker_name(), **fields)


def heartbeat_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "lease-heartbeat" and t.is_alive()]


def test_a_row_is_claimed_by_the_first_delivery_only() -> None:
    job = Job.objects.create(kind="evaluate")
    assert claim(FAST, job.pk, queued=Job.Status.QUEUED, stage="starting") is True
    assert claim(FAST, job.pk, queued=Job.Status.QUEUED, worker="someone else") is False
    job.refresh_from_db()
    assert (job.status, job.worker, job.stage) == (Job.Status.RUNNING, identity.worker_name(), "starting")
    assert job.heartbeat_at is not None


def test_one_heartbeat_thread_renews_every_row_the_process_holds() -> None:
    old = timezone.now() - timedelta(minutes=1)
    first, second = running(heartbeat_at=old), running(heartbeat_at=old)
    beat = heartbeat()
    leases = [beat.hold(FAST, first.pk), beat.hold(FAST, second.pk)]
    try:
        assert len(heartbeat_threads()) == 1
        deadline = time.monotonic() + 5
        while Job.objects.filter(pk__in=[first.pk, second.pk], heartbeat_at=old).exists():
            assert time.monotonic() < deadline, "the heartbeat did not renew both rows"
            time.sleep(0.05)
        assert len(heartbeat_threads()) == 1
        assert not any(lease.lost.is_set() for lease in leases)
    finally:
        for lease in leases:
            beat.release(lease)
    deadline = time.monotonic() + 3
    while heartbeat_threads():  # nothing held: no thread left polling an idle process
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_a_row_taken_from_the_process_marks_only_its_lease_lost() -> None:
    kept, taken = running(heartbeat_at=timezone.now()), running(heartbeat_at=timezone.now())
    beat = heartbeat()
    kept_lease, taken_lease = beat.hold(FAST, kept.pk), beat.hold(FAST, taken.pk)
    try:
        Job.objects.filter(pk=taken.pk).update(status=Job.Status.INTERRUPTED)
        assert taken_lease.lost.wait(5), "the heartbeat did not notice the row was taken"
        assert not kept_lease.lost.is_set()
    finally:
        beat.release(kept_lease)
        beat.release(taken_lease)


def _interrupted(row: Job) -> dict[str, Any]:
    return {"status": Job.Status.INTERRUPTED, "error": "gone"}


def test_the_reaper_ends_only_rows_whose_lease_lapsed() -> None:
    now = timezone.now()
    lapsed = running(heartbeat_at=now - timedelta(minutes=2))
    alive = running(heartbeat_at=now)
    queued = Job.objects.create(kind="evaluate", heartbeat_at=now - timedelta(minutes=2))
    seen: list[tuple[int, str]] = []
    reaped = reap(
        FAST, before=now - timedelta(seconds=30), values=_interrupted, aftermath=lambda r: seen.append((r.pk, r.status))
    )
    assert reaped == 1 and seen == [(lapsed.pk, Job.Status.INTERRUPTED)]
    statuses = dict(Job.objects.values_list("pk", "status"))
    assert statuses == {lapsed.pk: Job.Status.INTERRUPTED, alive.pk: Job.Status.RUNNING, queued.pk: Job.Status.QUEUED}


def test_the_reaper_spares_a_row_renewed_after_it_was_read() -> None:
    lapsed = running(heartbeat_at=timezone.now() - timedelta(minutes=2))

    def renewed_meanwhile(row: Job) -> dict[str, Any]:  # its worker was slow, not dead
        Job.objects.filter(pk=row.pk).update(heartbeat_at=timezone.now())
        return _interrupted(row)

    assert reap(FAST, before=timezone.now() - timedelta(seconds=30), values=renewed_meanwhile) == 0
    assert Job.objects.get(pk=lapsed.pk).status == Job.Status.RUNNING


def test_one_name_per_process_names_its_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(identity, "_names", {})
    monkeypatch.setattr(identity, "_node", None)
    identity.worker_node_set("jobs@box")
    name = identity.worker_name()
    assert name == identity.worker_name() and name.startswith("jobs@box (")
    assert identity.worker_node(name) == "jobs@box"


ran: list[dict[str, Any]] = []


def record(**kwargs: Any) -> None:
    """A task, as the runtime finds one: by its dotted name."""
    ran.append(kwargs)


def test_a_task_is_sent_by_name_to_celery(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    settings.EMBEDDED = False
    sent: list[tuple[str, dict[str, Any], str]] = []

    class App:
        def send_task(self, name: str, *, kwargs: dict[str, Any], queue: str) -> None:
            sent.append((name, kwargs, queue))

    monkeypatch.setattr(pool, "current_app", App())
    lane = pool.Lane("test", threads=lambda: 1, every=lambda: 60.0, reap=lambda: 0)
    pool.enqueue("tests.inference.test_runtime.record", kwargs={"n": 1}, queue="jobs", lane=lane)
    assert sent == [("tests.inference.test_runtime.record", {"n": 1}, "jobs")] and not lane.running


def test_a_task_runs_in_its_lane_in_the_embedded_default(settings: Any) -> None:
    settings.EMBEDDED = True
    ran.clear()
    recovered = threading.Event()
    lane = pool.Lane("test", threads=lambda: 1, every=lambda: 60.0, reap=lambda: 0, recover=lambda _: recovered.set())
    try:
        pool.enqueue("tests.inference.test_runtime.record", kwargs={"n": 2}, queue="jobs", lane=lane)
        deadline = time.monotonic() + 5
        while not ran:
            assert time.monotonic() < deadline, "the task did not run"
            time.sleep(0.02)
        assert ran == [{"n": 2}] and recovered.wait(5)
    finally:
        lane.stop()
    assert not lane.running


def flaky(**kwargs: Any) -> None:
    """A task that meets a locked database on its first run, as Celery's autoretry_for covers."""
    ran.append(kwargs)
    if len(ran) == 1:
        raise OperationalError("database table is locked")


flaky.autoretry_for = (OperationalError,)  # type: ignore[attr-defined]
flaky.retry_backoff = 0.1  # type: ignore[attr-defined]
flaky.max_retries = 3  # type: ignore[attr-defined]


def test_an_embedded_task_is_run_again_after_a_database_error_as_celery_would() -> None:
    ran.clear()
    pool.task_run("tests.inference.test_runtime.flaky", {"n": 3})
    assert ran == [{"n": 3}, {"n": 3}]
    ran.clear()
    pool.task_run("tests.inference.test_runtime.record", {"n": 4})  # no autoretry_for: once
    assert ran == [{"n": 4}]
