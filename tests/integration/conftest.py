"""The real platform, as deployed: PostgreSQL, Redis, daphne and a Celery worker process.

One set of processes serves the whole integration run (the model loads once per worker).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from tools.launch import ROOT, VENV_BIN, Platform, free_port, manage, platform_env, prepare, wait_for_port

__all__ = ["ROOT", "VENV_BIN", "Platform", "free_port", "manage", "wait_for_port"]

PG_ADMIN = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


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
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    _flush_redis_db(REDIS_DB_URL)
    data = tmp_path_factory.mktemp("platform")
    env = platform_env(
        data_dir=data,
        database_url=PG_ADMIN.rsplit("/", 1)[0] + f"/{name}",
        redis_url=REDIS_DB_URL,
        REPLY_STALE_SECONDS="3",
    )
    logs = data / "logs"
    logs.mkdir()
    platform = Platform(env=env, port=free_port(), log_dir=logs)
    try:
        platform.tokens = prepare(env, ("alice", "bob"))
        platform.start_daphne()
        platform.start_worker()
        yield platform
    finally:
        platform.stop_all()
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        _flush_redis_db(REDIS_DB_URL)
