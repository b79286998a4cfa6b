"""The real platform, as deployed: PostgreSQL, Redis, daphne and a Celery worker process.

One set of processes serves the whole integration run (the model loads once per worker).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[2]
PG_ADMIN = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_DB_URL = os.environ.get("TEST_INTEGRATION_REDIS_URL", "redis://127.0.0.1:6379/13")
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {port}")


def manage(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
        input=stdin, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


@dataclass
class Platform:
    env: dict[str, str]
    port: int
    tokens: dict[str, str]
    log_dir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            argv, cwd=ROOT, env=env or self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.procs[name] = proc
        return proc

    def start_worker(self, name: str = "worker", queues: str = "llama_cpp,default", concurrency: int = 1) -> None:
        self.start(
            name,
            [
                str(VENV_BIN / "celery"), "-A", "chatsite", "worker", "-Q", queues,
                "--concurrency", str(concurrency), "--prefetch-multiplier", "1", "-l", "INFO",
                "-n", f"{name}-{uuid.uuid4().hex[:6]}@%h", "--without-gossip", "--without-mingle",
            ],
        )  # fmt: skip
        self.wait_worker_ready(name)

    def wait_worker_ready(self, name: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        log = self.log_dir / f"{name}.log"
        while time.monotonic() < deadline:
            if log.exists() and b" ready." in log.read_bytes():
                return
            if self.procs[name].poll() is not None:
                raise RuntimeError(f"{name} exited: {log.read_text()[-3000:]}")
            time.sleep(0.2)
        raise TimeoutError(f"{name} not ready: {log.read_text()[-3000:]}")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(name)
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        proc.wait(30)

    def stop_all(self) -> None:
        for name in list(self.procs):
            proc = self.procs[name]
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(15)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.procs.pop(name, None)


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
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "REDIS_URL"))}
    env.update(
        DJANGO_SETTINGS_MODULE="chatsite.settings",
        DATABASE_URL=PG_ADMIN.rsplit("/", 1)[0] + f"/{name}",
        REDIS_URL=REDIS_DB_URL,
        CHATSITE_DATA_DIR=str(data),
        REPLY_STALE_SECONDS="3",
        PYTHONUNBUFFERED="1",
    )
    manage(env, "migrate", "--noinput")
    manage(env, "bootstrap")
    tokens = json.loads(
        manage(
            env,
            "shell",
            "-c",
            "import json\n"
            "from django.contrib.auth.models import User\n"
            "from rest_framework.authtoken.models import Token\n"
            "out = {}\n"
            "for n in ('alice', 'bob'):\n"
            "    u = User.objects.create_user(n, password=n + '-password-1')\n"
            "    out[n] = Token.objects.create(user=u).key\n"
            "print(json.dumps(out))\n",
        ).strip().splitlines()[-1]
    )
    logs = data / "logs"
    logs.mkdir()
    platform = Platform(env=env, port=free_port(), tokens=tokens, log_dir=logs)
    try:
        platform.start(
            "daphne", [str(VENV_BIN / "daphne"), "-b", "127.0.0.1", "-p", str(platform.port), "chatsite.asgi:application"]
        )
        wait_for_port(platform.port)
        platform.start_worker()
        yield platform
    finally:
        platform.stop_all()
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        _flush_redis_db(REDIS_DB_URL)
