"""Private Redis and PostgreSQL servers for the fault tests, which kill and restart them.

The machine's shared servers are never touched: each fault test starts its own on a free port,
with its data in a temporary folder, and removes it afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.platform_setup import database_create, database_drop, prepare
from tools.launch import VENV_BIN, Platform, PrivateRedis, free_port, platform_env, wait_for_port

__all__ = ["PrivateRedis", "PrivatePostgres", "private_platform", "scratch_database", "alive", "wait_until"]


def _pg_bin() -> Path:
    for version in sorted(Path("/usr/lib/postgresql").glob("*"), reverse=True):
        if (version / "bin" / "initdb").exists():
            return version / "bin"
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise RuntimeError("PostgreSQL's initdb is not installed")


class PrivatePostgres:
    """A PostgreSQL cluster made with ``initdb`` in a temporary folder and run with ``pg_ctl`` as
    the ``postgres`` user (``runuser``; PostgreSQL refuses to run as root)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.bin = _pg_bin()
        self.root = Path(tempfile.mkdtemp(prefix="chatsite-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self._as_postgres = os.geteuid() == 0

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/chatsite"

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin / argv[0]), *argv[1:]]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, capture_output=True, text=True, timeout=120, check=check)

    def create(self) -> None:
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        self.start()
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "chatsite")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")
        wait_for_port(self.port, timeout=30)

    def stop(self, mode: str = "immediate") -> None:
        """``immediate`` ends every connection at once, as a crash or a failover does."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def wait_until(predicate, timeout: float, what: str, every: float = 0.2):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(every)


@contextmanager
def scratch_database() -> Iterator[str]:
    """A fresh database on the machine's PostgreSQL, migrated (a copy of the template database:
    tests.platform_setup), for tests that restart only Redis."""
    name = f"chatsite_fault_{uuid.uuid4().hex[:8]}"
    url = database_create(name)
    try:
        yield url
    finally:
        database_drop(name)


@contextmanager
def private_platform(
    folder: Path,
    *,
    database_url: str,
    redis_url: str,
    beat: bool = False,
    bare_worker: bool = False,
    worker: bool = True,
    code: str = "",
    **env: str,
) -> Iterator[Platform]:
    """daphne, a Celery worker (started as docker-compose starts it, or with ``bare_worker`` as a
    plain ``celery -A chatsite worker``: the default pool and concurrency, gossip and mingle on; none
    with ``worker=False``, for a test of daphne alone) and optionally beat, on the given database
    and Redis; users alice and bob. ``code`` runs in the set-up process, after the users are made."""
    environment = platform_env(data_dir=folder, database_url=database_url, redis_url=redis_url, **env)
    logs = folder / "logs"
    logs.mkdir(exist_ok=True)
    platform = Platform(env=environment, port=free_port(), log_dir=logs)
    try:
        platform.tokens = prepare(environment, ("alice", "bob"), code=code)
        platform.start_daphne()
        if bare_worker:
            platform.start(
                "worker",
                [str(VENV_BIN / "celery"), "-A", "chatsite", "worker", "-Q", "llama_cpp,default", "-l", "INFO"],
            )
            platform.wait_worker_ready("worker")
        elif worker:
            platform.start_worker()
        if beat:
            platform.start(
                "beat",
                [str(VENV_BIN / "celery"), "-A", "chatsite", "beat", "-l", "INFO", "--schedule", str(folder / "beat")],
            )
        yield platform
    except BaseException as exc:
        # What the processes did is often the only clue to a failure seen in CI.
        for log in sorted(logs.glob("*.log")):
            exc.add_note(f"--- {log.name}, its end ---\n{log.read_text(errors='replace')[-4000:]}")
        raise
    finally:
        platform.stop_all()


def alive(platform: Platform) -> dict[str, bool]:
    return {name: proc.poll() is None for name, proc in platform.procs.items()}
