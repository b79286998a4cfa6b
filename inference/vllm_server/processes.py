"""The server's process group: started from one long-lived thread, ended as a group, and stopped
with every other server this process started at interpreter exit and Celery worker shutdown."""

from __future__ import annotations

import atexit
import logging
import signal
import subprocess
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from inference import children

if TYPE_CHECKING:
    from inference.vllm_server.server import VLLMServer

# One logger for the package, named as when it was one module.
log = logging.getLogger("inference.vllm_server")


def spawn(
    argv: Sequence[str], *, env: Mapping[str, str], stdout: IO[Any], cwd: str | Path | None = None
) -> subprocess.Popen[bytes]:
    """Start the server in its own process group, from a thread that lives as long as the process.

    A reply thread, or a thread that restarts a dead engine, may end; the parent-death signal
    would then stop a server that is still in use. The signal is SIGTERM, not SIGKILL: the API
    server then ends its engine process itself.
    """
    return children.spawn(
        argv, env=env, cwd=cwd, stdout=stdout, stderr=subprocess.STDOUT, death_signal=signal.SIGTERM, lasting=True
    )


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    children.group_signal(pgid, sig)


def stop_group(proc: subprocess.Popen[bytes], timeout: float) -> int | None:
    """SIGTERM to the server's process group (the API server and its engine), SIGKILL to what is
    left of it after ``timeout``; returns the server's exit status."""
    return children.group_stop(proc, grace=timeout)


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
