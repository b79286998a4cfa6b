"""Which workers are online, and what each of their processes holds and runs.

Every process of a Celery worker that runs tasks or holds models writes a small beat to Redis:

- the worker's main process, ``chatsite:worker:<hostname>``: its queues, pool, host, pid and
  start, and (a thread or solo pool runs its tasks here) its memory, models and running tasks;
- each prefork pool child, ``chatsite:worker:<hostname>:proc:<pid>``: its memory, its model cache
  and the tasks it runs now. With the default prefork pool the replies and their models live in
  these children, so the main process's own beat shows neither.

Each beat is written every ``WORKER_BEAT_SECONDS`` and expires after ``WORKER_BEAT_TTL``: a
worker that was killed leaves the list at most ``WORKER_BEAT_TTL`` seconds after it died, and a
graceful stop deletes its keys at once. A task starting or ending writes the beat at once.
``workers_online()`` merges each worker's keys into one entry. The embedded default has no
Redis and one in-process worker that takes every queue.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.conf import settings

from inference.runtime.identity import worker_node, worker_node_set

log = logging.getLogger(__name__)

KEY_PREFIX = "chatsite:worker:"
PROC_INFIX = ":proc:"
# A beat every 2 s that lives 6 s: a worker shows within 2 s of being ready, survives two missed
# beats (a busy process), and a dead one leaves the list within 6 s, under the 10 s promised to
# operators even with a page that reads the list every 2 s.
WORKER_BEAT_SECONDS = 2.0
WORKER_BEAT_TTL = 6
UNLOADED_SHOWN = 20  # the newest unloaded models listed per worker, across its processes

_started_at = time.time()


def _redis() -> Any:
    import redis

    return redis.Redis.from_url(settings.REDIS_URL or "", socket_timeout=2, socket_connect_timeout=2)


# --- what this process runs now ------------------------------------------------------------------

_tasks_lock = threading.Lock()
_running: dict[str, dict[str, Any]] = {}
_tasks_done = 0


def _plain(value: Any) -> Any:
    """A task argument as shown to operators: ids and short strings, never a large payload."""
    if value is None or isinstance(value, bool | int | float):
        return value
    text = value if isinstance(value, str) else type(value).__name__
    return text if len(text) <= 80 else text[:79] + "…"


def worker_task_started(*, task_id: str, name: str, kwargs: dict[str, Any] | None) -> None:
    """Record that this process started a task (Celery's ``task_prerun``) and beat at once."""
    task = {"id": task_id, "name": name, "kwargs": {str(k): _plain(v) for k, v in (kwargs or {}).items()},
            "started_at": time.time()}  # fmt: skip
    with _tasks_lock:
        _running[task_id] = task
    _beat_soon()


def worker_task_finished(*, task_id: str) -> None:
    """Record that this process finished a task (Celery's ``task_postrun``) and beat at once."""
    global _tasks_done
    with _tasks_lock:
        if _running.pop(task_id, None) is not None:
            _tasks_done += 1
    _beat_soon()


@contextmanager
def worker_task(*, name: str, kwargs: dict[str, Any]) -> Iterator[None]:
    """Record a task run outside Celery (the embedded default's threads) for its duration."""
    task_id = f"local-{threading.get_ident()}-{time.monotonic_ns()}"
    worker_task_started(task_id=task_id, name=name, kwargs=kwargs)
    try:
        yield
    finally:
        worker_task_finished(task_id=task_id)


def process_state() -> dict[str, Any]:
    """This process: pid, resident memory, model cache (loaded, keep-alive, unloaded), the tasks
    it runs now and how many it finished since it started."""
    from inference.cache import model_cache_stats

    try:
        with open("/proc/self/statm") as fh:
            rss: int | None = int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        rss = None
    with _tasks_lock:
        tasks, done = [dict(t) for t in _running.values()], _tasks_done
    models = model_cache_stats() or {"loaded": [], "unloaded": [], "keep_alive_seconds": None}
    return {"pid": os.getpid(), "rss_bytes": rss, "models": models, "tasks": tasks, "tasks_done": done}


# --- the beat ------------------------------------------------------------------------------------


class _Beat:
    """Writes ``info`` and this process's state to ``key`` until stopped; stop deletes the key."""

    def __init__(self, key: str, info: dict[str, Any]) -> None:
        self.key, self.info = key, info
        self.wake = threading.Event()
        self._lock = threading.Lock()
        self._stopped = False
        self._client: Any = None

    def start(self) -> None:
        threading.Thread(target=self._run, name="worker-beat", daemon=True).start()

    def _run(self) -> None:
        while not self._stopped:
            self.write()
            self.wake.wait(WORKER_BEAT_SECONDS)
            self.wake.clear()

    def write(self) -> None:
        state = json.dumps({**self.info, **process_state(), "beat_at": time.time()})
        with self._lock:  # never after stop(): a late beat would bring a stopped worker back
            if self._stopped:
                return
            try:
                self._client = self._client or _redis()
                self._client.set(self.key, state, ex=WORKER_BEAT_TTL)
            except Exception as exc:  # Redis is away: the worker goes on; it shows again once it is back
                log.debug("worker beat failed: %s", exc)
                self._client = None

    def stop(self, *also: str) -> None:
        with self._lock:
            self._stopped = True
            try:
                client = self._client or _redis()
                client.delete(self.key, *also)
            except Exception as exc:  # the key expires on its own
                log.warning("removing the worker beat %s failed: %s", self.key, exc)
        self.wake.set()


_identity: dict[str, Any] = {}  # this worker's hostname and main pid, inherited by forked children
_beat: _Beat | None = None


def _beat_soon() -> None:
    if _beat is not None:
        _beat.wake.set()


def _forget_parent_beat() -> None:
    """In a forked child the parent's beat thread does not exist, and the locks may have been
    held by a parent thread at the fork: start from fresh ones and an empty record."""
    global _beat, _tasks_lock, _running, _tasks_done
    _beat, _tasks_lock, _running, _tasks_done = None, threading.Lock(), {}, 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_parent_beat)


def worker_identity_set(*, hostname: str) -> None:
    """Remember this worker's name before its pool forks (Celery's ``celeryd_after_setup``): its
    beats, and the name its processes write on the rows they claim (``worker_name()``)."""
    _identity.update(hostname=hostname, worker_pid=os.getpid())
    worker_node_set(hostname)


def worker_beat_start(*, hostname: str, queues: list[str], pool: str = "", concurrency: int | None = None) -> None:
    """Start the beat of this worker's main process (called once the worker is ready)."""
    global _beat
    if settings.EMBEDDED or _beat is not None:
        return
    _identity.update(hostname=hostname, worker_pid=os.getpid())
    info = {"hostname": hostname, "queues": queues, "pool": pool, "concurrency": concurrency, "state": "online",
            "host": socket.gethostname(), "started_at": time.time()}  # fmt: skip
    _beat = _Beat(KEY_PREFIX + hostname, info)
    _beat.start()


def worker_beat_stopping() -> None:
    """The worker was asked to stop and finishes its tasks: shown as ``stopping`` until it is gone.
    Called from a signal handler: it only flips a flag, the next beat carries it."""
    if _beat is not None:
        _beat.info["state"] = "stopping"


def worker_beat_stop() -> None:
    """Remove this worker from the list at once (a graceful stop), its pool children's keys too."""
    global _beat
    beat, _beat = _beat, None
    if beat is None:
        return
    try:
        children = list(_redis().scan_iter(match=beat.key + PROC_INFIX + "*", count=100))
    except Exception:  # they expire on their own
        children = []
    beat.stop(*children)


def worker_process_beat_start() -> None:
    """Start the beat of a prefork pool child (Celery's ``worker_process_init``)."""
    global _beat
    hostname = _identity.get("hostname")
    if settings.EMBEDDED or not hostname or _beat is not None:
        return
    info = {"hostname": hostname, "worker_pid": _identity.get("worker_pid"), "started_at": time.time()}
    _beat = _Beat(f"{KEY_PREFIX}{hostname}{PROC_INFIX}{os.getpid()}", info)
    _beat.start()


def worker_process_beat_stop(*, pid: int) -> None:
    """Pool child ``pid`` exits (Celery's ``worker_process_shutdown``): its key goes with it. Run
    in that child, it also stops its beat; run in the main process, it removes the key."""
    global _beat
    hostname = _identity.get("hostname")
    if settings.EMBEDDED or not hostname:
        return
    key = f"{KEY_PREFIX}{hostname}{PROC_INFIX}{pid}"
    if _beat is not None and _beat.key == key:
        beat, _beat = _beat, None
        beat.stop()
        return
    try:
        _redis().delete(key)
    except Exception as exc:  # it expires on its own
        log.warning("removing the beat of pool process %s failed: %s", pid, exc)


# --- the list ------------------------------------------------------------------------------------


def _age(beat_at: Any, now: float) -> float:
    return round(max(0.0, now - float(beat_at or 0)), 1)


def workers_merge(mains: list[dict[str, Any]], children: list[dict[str, Any]], *, now: float) -> list[dict[str, Any]]:
    """One entry per worker from its main process's beat and its pool children's beats.

    A child counts only under the main process that forked it (``worker_pid``): the children of
    a killed worker of the same name are not added to the one that replaced it.
    """
    workers = []
    for main in sorted(mains, key=lambda m: str(m.get("hostname", ""))):
        own = [c for c in children if c.get("hostname") == main.get("hostname")
               and c.get("worker_pid") in (None, main.get("pid"))]  # fmt: skip
        procs = [{**main, "role": "main"}] + [{**c, "role": "child"} for c in sorted(own, key=lambda c: c["pid"])]
        loaded, unloaded, tasks = [], [], []
        keep_alive = None
        for proc in procs:
            models = proc.get("models") or {}
            loaded += [{**m, "pid": proc["pid"]} for m in models.get("loaded") or []]
            unloaded += [{**m, "pid": proc["pid"]} for m in models.get("unloaded") or []]
            tasks += [{**t, "pid": proc["pid"]} for t in proc.get("tasks") or []]
            keep_alive = keep_alive if keep_alive is not None else models.get("keep_alive_seconds")
        unloaded.sort(key=lambda m: float(m.get("unloaded_at") or 0))
        rss = [p["rss_bytes"] for p in procs if p.get("rss_bytes") is not None]
        processes = [{"pid": p["pid"], "role": p["role"], "rss_bytes": p.get("rss_bytes"),
                      "tasks_done": int(p.get("tasks_done") or 0), "started_at": p.get("started_at"),
                      "beat_age_seconds": _age(p.get("beat_at"), now)} for p in procs]  # fmt: skip
        worker = {k: v for k, v in main.items() if k not in ("models", "tasks", "tasks_done", "rss_bytes", "role")}
        worker.update(
            state=main.get("state") or "online",
            processes=processes,
            rss_bytes=sum(rss) if rss else None,
            models={"loaded": loaded, "unloaded": unloaded[-UNLOADED_SHOWN:], "keep_alive_seconds": keep_alive},
            tasks=sorted(tasks, key=lambda t: float(t.get("started_at") or 0)),
            tasks_done=sum(p["tasks_done"] for p in processes),
            beat_age_seconds=_age(main.get("beat_at"), now),
        )
        workers.append(worker)
    return workers


def _beats() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The main processes' and the pool children's beats, as stored in Redis."""
    client = _redis()
    keys = sorted(
        k.decode() if isinstance(k, bytes) else k for k in client.scan_iter(match=KEY_PREFIX + "*", count=100)
    )
    values = client.mget(keys) if keys else []
    mains: list[dict[str, Any]] = []
    children: list[dict[str, Any]] = []
    for key, value in zip(keys, values, strict=True):
        if not value:  # expired between the scan and the read
            continue
        try:
            beat = json.loads(value)
        except ValueError:
            continue
        (children if PROC_INFIX in key else mains).append(beat)
    return mains, children


def workers_online() -> list[dict[str, Any]]:
    """The workers whose main process beat within the last ``WORKER_BEAT_TTL`` seconds: queues,
    processes, memory (all processes), loaded and lately unloaded models, running tasks and jobs."""
    from inference.models import Job

    now = time.time()
    if settings.EMBEDDED:
        main = {"hostname": "embedded", "queues": ["*"], "pool": "threads", "host": socket.gethostname(),
                "concurrency": settings.EMBEDDED_REPLY_THREADS, "started_at": _started_at, "beat_at": now,
                **process_state()}  # fmt: skip
        workers = workers_merge([main], [], now=now)
    else:
        try:
            mains, children = _beats()
        except Exception as exc:
            log.warning("listing workers failed: %s", exc)
            return []
        workers = workers_merge(mains, children, now=now)
    running = list(Job.objects.filter(status=Job.Status.RUNNING).values("id", "kind", "worker", "progress"))
    for worker in workers:
        worker["jobs"] = [j for j in running if worker_node(j["worker"] or "") == worker["hostname"]]
    return workers
