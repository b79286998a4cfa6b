"""Which workers are online: each Celery worker writes a small beat to Redis every few seconds.

The key ``chatsite:worker:<hostname>`` holds the worker's queues, pid, start and last beat, and
expires after ``WORKER_BEAT_TTL`` seconds: a worker that dies disappears from the list on its
own. The embedded default has no Redis and one in-process worker that takes every queue.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from typing import Any

from django.conf import settings

log = logging.getLogger(__name__)

KEY_PREFIX = "chatsite:worker:"
WORKER_BEAT_SECONDS = 5.0
WORKER_BEAT_TTL = 20
_started_at = time.time()


def _redis() -> Any:
    import redis

    return redis.Redis.from_url(settings.REDIS_URL or "", socket_timeout=2, socket_connect_timeout=2)


def process_state() -> dict[str, Any]:
    """This process's resident memory and its model cache (loaded models, keep-alive, unloaded)."""
    from inference.cache import model_cache_stats

    try:
        with open("/proc/self/statm") as fh:
            rss = int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        rss = None
    return {"rss_bytes": rss, "models": model_cache_stats() or {"loaded": [], "unloaded": []}}


def worker_beat_start(*, hostname: str, queues: list[str]) -> None:
    """Start the beat of this worker process (called once the worker is ready)."""
    if settings.EMBEDDED:
        return
    info = {"hostname": hostname, "queues": queues, "pid": os.getpid(), "host": socket.gethostname(),
            "started_at": time.time()}  # fmt: skip

    def beat() -> None:
        client = None
        while True:
            try:
                client = client or _redis()
                state = {**info, **process_state(), "beat_at": time.time()}
                client.set(KEY_PREFIX + hostname, json.dumps(state), ex=WORKER_BEAT_TTL)
            except Exception as exc:  # Redis is away: the worker goes on; it shows again once it is back
                log.debug("worker beat failed: %s", exc)
                client = None
            time.sleep(WORKER_BEAT_SECONDS)

    threading.Thread(target=beat, name="worker-beat", daemon=True).start()


def workers_online() -> list[dict[str, Any]]:
    """The workers that beat within the last ``WORKER_BEAT_TTL`` seconds, with their running jobs."""
    from inference.models import Job

    workers: list[dict[str, Any]]
    if settings.EMBEDDED:
        workers = [{"hostname": "embedded", "queues": ["*"], "pid": os.getpid(), "host": socket.gethostname(),
                    "started_at": _started_at, "beat_at": time.time(), **process_state()}]  # fmt: skip
    else:
        try:
            client = _redis()
            keys = sorted(client.scan_iter(match=KEY_PREFIX + "*", count=100))
            values = client.mget(keys) if keys else []
        except Exception as exc:
            log.warning("listing workers failed: %s", exc)
            return []
        workers = [json.loads(v) for v in values if v]
    running = list(Job.objects.filter(status=Job.Status.RUNNING).values("id", "kind", "worker", "progress"))
    for worker in workers:
        worker["jobs"] = [j for j in running if (j["worker"] or "").split(" ")[0] == worker["hostname"]]
        worker["beat_age_seconds"] = round(max(0.0, time.time() - float(worker["beat_at"])), 1)
    return workers
