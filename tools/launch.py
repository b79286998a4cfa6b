"""Start the platform's processes (daphne, Celery workers) on loopback, for the integration tests
and the benchmarks. Not used in production: there, a process manager or docker-compose does this.

Each process runs in its own process group and gets SIGTERM when the test or benchmark process
that started it dies, even by SIGKILL (``inference.children``): none outlives a killed run.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from inference.children import free_port, group_signal, group_stop, spawn

__all__ = [
    "ROOT",
    "VENV_BIN",
    "Platform",
    "PrivateRedis",
    "free_port",
    "manage",
    "platform_env",
    "prepare",
    "wait_for_port",
]

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def wait_for_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {port}")


def manage(env: dict[str, str], *args: str) -> str:
    """Run ``manage.py`` with ``env``; return its stdout, raising with its stderr on failure."""
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    if result.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stderr[-4000:]}")
    return result.stdout


@dataclass
class Platform:
    env: dict[str, str]
    port: int
    log_dir: Path
    tokens: dict[str, str] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        with open(self.log_dir / f"{name}.log", "ab") as log:
            proc = spawn(
                argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                death_signal=signal.SIGTERM, lasting=True,
            )  # fmt: skip
        self.procs[name] = proc
        return proc

    def start_daphne(self) -> None:
        self.start(
            "daphne",
            [
                str(VENV_BIN / "daphne"), "-b", "127.0.0.1", "-p", str(self.port),
                # As deployed (docker-compose.yml): a burst of handshakes queues for the database.
                "--websocket_connect_timeout", "30", "chatsite.asgi:application",
            ],
        )  # fmt: skip
        wait_for_port(self.port)

    def start_worker(
        self, name: str = "worker", queues: str = "llama_cpp,default", concurrency: int = 1, pool: str = "prefork"
    ) -> None:
        self.start(
            name,
            [
                str(VENV_BIN / "celery"), "-A", "chatsite", "worker", "-Q", queues, "-P", pool,
                "--concurrency", str(concurrency), "--prefetch-multiplier", "1", "-l", "INFO",
                "-n", f"{name}-{uuid.uuid4().hex[:6]}@%h", "--without-gossip", "--without-mingle",
            ],
        )  # fmt: skip
        self.wait_worker_ready(name)

    def wait_worker_ready(self, name: str, timeout: float = 120) -> None:
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
        group_signal(proc.pid, sig)
        proc.wait(30)

    def stop_all(self) -> None:
        """SIGTERM to each process's group, SIGKILL to what is left of it after 15 s."""
        for name in list(self.procs):
            group_stop(self.procs.pop(name), grace=15)


class PrivateRedis:
    """A ``redis-server`` on a free port, without persistence (as a restart after SIGKILL of a
    cache-only Redis: everything in it is gone)."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.folder = folder
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        with open(self.folder / "redis.log", "ab") as log:
            self.proc = spawn(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", str(self.folder)],
                stdout=log, stderr=subprocess.STDOUT, death_signal=signal.SIGTERM, lasting=True,
            )  # fmt: skip
        wait_for_port(self.port, timeout=20)

    def kill(self) -> None:
        """SIGKILL: no goodbye to any client."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
            self.proc = None

    def stop(self) -> None:
        self.kill()


def platform_env(*, data_dir: Path, database_url: str | None, redis_url: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(DJANGO_SETTINGS_MODULE="chatsite.settings", CHATSITE_DATA_DIR=str(data_dir), PYTHONUNBUFFERED="1")
    if database_url:
        env["DATABASE_URL"] = database_url
    if redis_url:
        env["REDIS_URL"] = redis_url
    env.update(extra)
    return env


CREATE_USERS = (
    "import json\n"
    "from django.contrib.auth.models import User\n"
    "from sessions_app.tokens import token_create\n"
    "out = dict()\n"
    "for n in NAMES:\n"
    "    u, _ = User.objects.get_or_create(username=n)\n"
    "    u.set_password(n + '-password-1'); u.save()\n"
    "    out[n] = token_create(user=u, name='launch')[1]\n"
    "print(json.dumps(out))\n"
)


def prepare(env: dict[str, str], users: tuple[str, ...]) -> dict[str, str]:
    """Migrate, bootstrap and create ``users``; return their API tokens."""
    import json

    manage(env, "migrate", "--noinput")
    manage(env, "bootstrap")
    out = manage(env, "shell", "-c", f"NAMES = {list(users)!r}\n" + CREATE_USERS)
    tokens: dict[str, str] = json.loads(out.strip().splitlines()[-1])
    return tokens
