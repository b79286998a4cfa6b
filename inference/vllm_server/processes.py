"""The server's process group: started from one long-lived thread, ended as a group, and stopped
with every other server this process started at interpreter exit and Celery worker shutdown."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from inference.vllm_server.server import VLLMServer

# One logger for the package, named as when it was one module.
log = logging.getLogger("inference.vllm_server")


_spawner: ThreadPoolExecutor | None = None
_spawner_lock = threading.Lock()


def spawn(argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """``subprocess.Popen`` on a thread that lives as long as the process.

    A reply thread, or a thread that restarts a dead engine, may end; the parent-death signal
    would then stop a server that is still in use.
    """
    global _spawner
    with _spawner_lock:
        if _spawner is None:
            _spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vllm-spawn")

    def popen() -> subprocess.Popen[bytes]:
        return subprocess.Popen(argv, **kwargs)

    return _spawner.submit(popen).result()


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop_group(proc: subprocess.Popen[bytes], timeout: float) -> int | None:
    """SIGTERM to the server's process group, SIGKILL after ``timeout``; returns its exit status."""
    kill_group(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        log.warning("vLLM engine (pid %s) ignored SIGTERM for %s s; killing it", proc.pid, timeout)
        kill_group(proc.pid)
        proc.wait(10)
    # The API server is gone; sweep any engine process it left in the group.
    kill_group(proc.pid)
    return proc.returncode


# --- Stop at shutdown -------------------------------------------------------------------------

_running: set[VLLMServer] = set()
_hooks_lock = threading.Lock()
_hooks_installed = False


def running_servers() -> list[VLLMServer]:
    """The servers this process started and has not stopped."""
    return list(_running)


def stop_all() -> None:
    for server in list(_running):
        try:
            server.stop()
        except Exception:  # one that fails to stop must not keep the others running
            log.exception("stopping the vLLM engine %s failed", server.spec.served_model_name)


def _on_worker_shutdown(**_: Any) -> None:
    stop_all()


def register(server: VLLMServer) -> None:
    """Count ``server`` as running; the first call installs the hooks that stop it at shutdown."""
    global _hooks_installed
    _running.add(server)
    with _hooks_lock:
        if _hooks_installed:
            return
        atexit.register(stop_all)
        try:
            from celery.signals import worker_shutdown
        except ImportError:  # not in a Celery worker's environment
            pass
        else:
            worker_shutdown.connect(_on_worker_shutdown, weak=False)
        _hooks_installed = True


def unregister(server: VLLMServer) -> None:
    _running.discard(server)
