"""``VLLMServer``: one supervised ``vllm serve`` child, started, restarted and stopped."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from inference.children import free_port
from inference.vllm_server.command import HOST, ServeSpec, serve_command
from inference.vllm_server.health import HEALTH_TIMEOUT, health_ok, log_tail, port_free
from inference.vllm_server.processes import kill_group, register, spawn, stop_group, unregister

# One logger for the package, named as when it was one module.
log = logging.getLogger("inference.vllm_server")

# First loads take 65-100 s on a 2-core CPU; a large model on a GPU server can take many minutes.
STARTUP_TIMEOUT = 900.0
STOP_TIMEOUT = 30.0
_POLL_SECONDS = 0.5


class EngineStartError(RuntimeError):
    """The server exited or never answered ``/health`` while starting; the message has its log."""


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

    def healthy(self, timeout: float = HEALTH_TIMEOUT) -> bool:
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
            kill_group(old.pid)
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
            unregister(self)
            if proc is not None:
                self.last_exit = stop_group(proc, timeout)
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
        port = self._port if self._port is not None and port_free(self._port) else free_port(HOST)
        command = [*self.command, *self.spec.args(port)]
        with self.log_path.open("ab") as out:
            out.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(command)}\n".encode())
            out.flush()
            # Its own process group (stop() ends the engine with it), dies with this process.
            proc = spawn(command, stdout=out, env=self._child_env())
        self.pid_path.write_text(f"{proc.pid}\n")
        register(self)
        started = time.monotonic()
        try:
            self._wait_healthy(proc, port)
        except BaseException:
            stop_group(proc, 5.0)
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
        env.update(self.spec.environment())
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
