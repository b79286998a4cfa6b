"""The real platform, as deployed: PostgreSQL, Redis, daphne and a Celery worker process.

One set of processes serves the whole integration run (the model loads once per worker), and one
worker on the `jobs` queue serves every job test of the run (``jobs_worker``).
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator

import pytest

from tests.platform_setup import database_create, database_drop, prepare
from tools.launch import ROOT, VENV_BIN, Platform, free_port, manage, platform_env, wait_for_port

__all__ = ["ROOT", "VENV_BIN", "Platform", "free_port", "manage", "wait_for_port"]

JOBS_WORKER = "worker-jobs"


def _redis_db_url() -> str:
    """TEST_INTEGRATION_REDIS_URL, else the first of Redis dbs 1-9 that no other test run on this
    machine holds (a lock file per db, held while this run lives): two runs sharing a db would
    take each other's tasks from the same queues."""
    if os.environ.get("TEST_INTEGRATION_REDIS_URL"):
        return os.environ["TEST_INTEGRATION_REDIS_URL"]
    import fcntl
    import tempfile

    for db in range(1, 10):
        handle = open(os.path.join(tempfile.gettempdir(), f"chatsite-test-redis-db-{db}.lock"), "w")  # noqa: SIM115
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        _held.append(handle)  # kept open (and locked) until this process ends
        return f"redis://127.0.0.1:6379/{db}"
    raise RuntimeError("Redis dbs 1-9 are all held by other test runs; set TEST_INTEGRATION_REDIS_URL")


_held: list[object] = []
REDIS_DB_URL = _redis_db_url()


def _flush_redis_db(url: str) -> None:
    import redis

    redis.Redis.from_url(url).flushdb()


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    name = f"chatsite_it_{uuid.uuid4().hex[:8]}"
    database_url = database_create(name)
    _flush_redis_db(REDIS_DB_URL)
    data = tmp_path_factory.mktemp("platform")
    port = free_port()
    env = platform_env(
        data_dir=data,
        database_url=database_url,
        redis_url=REDIS_DB_URL,
        REPLY_STALE_SECONDS="3",
        PLATFORM_URL=f"http://127.0.0.1:{port}",  # where a benchmark job reaches /v1 and the websocket
    )
    logs = data / "logs"
    logs.mkdir()
    platform = Platform(env=env, port=port, log_dir=logs)
    try:
        platform.tokens = prepare(env, ("alice", "bob"))
        platform.start_daphne()
        platform.start_worker()
        yield platform
    finally:
        platform.stop_all()
        database_drop(name)
        _flush_redis_db(REDIS_DB_URL)


def jobs_worker_running(platform: Platform) -> str:
    """The run's worker on the `jobs` queue, started if it is not running (a test killed it)."""
    if JOBS_WORKER not in platform.procs:
        platform.start_worker(name=JOBS_WORKER, queues="jobs")
    return JOBS_WORKER


@pytest.fixture(scope="session")
def jobs_worker(platform: Platform) -> Iterator[str]:
    """A worker on the `jobs` queue, started once for the run's job tests (test_jobs, test_finetune,
    test_synthesize, test_benchmark) rather than once per module: a start is a Django start-up, and
    the job modules ran in one group of ``make test`` one after another. A test that kills it
    starts the next one under the same name; a module that needs it running calls
    ``jobs_worker_running``."""
    yield jobs_worker_running(platform)
    if JOBS_WORKER in platform.procs:
        platform.kill(JOBS_WORKER, signal.SIGTERM)
