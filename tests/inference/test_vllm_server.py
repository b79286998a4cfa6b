"""The supervisor of a worker's ``vllm serve`` child, with a small HTTP server standing in for vLLM.

Only the process management is tested here: start on a free loopback port and wait for
``/health``, report a server that fails to start with its log, restart one that died, stop the
whole process group, and never leave a server behind a worker that exits or is killed. The real
engine is tested in tests/integration/test_vllm_worker.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from inference import vllm_server
from inference.backends.base import BackendUnavailable
from inference.backends.registry import options_validate
from inference.backends.vllm import VLLMBackend
from inference.vllm_server import EngineStartError, ServeSpec, VLLMServer, health_ok

# Parses vllm serve's arguments, records them, then behaves as $FAKE_VLLM says.
FAKE_SERVE = r"""
import argparse, http.server, json, os, signal, subprocess, sys, time

parser = argparse.ArgumentParser()
for name in ("--model", "--served-model-name", "--host", "--tensor-parallel-size", "--dtype",
             "--gpu-memory-utilization", "--max-model-len", "--quantization"):
    parser.add_argument(name)
parser.add_argument("--port", type=int)
args = parser.parse_args()
state = os.environ["FAKE_VLLM_STATE"]
behaviour = os.environ.get("FAKE_VLLM", "")
print("fake vllm serve starting", flush=True)
with open(os.path.join(state, f"argv-{os.getpid()}.json"), "w") as fh:
    json.dump(sys.argv[1:], fh)
if "crash" in behaviour:
    print("ValueError: No available memory for the cache blocks.", flush=True)
    sys.exit(3)
if "mute" in behaviour:
    time.sleep(3600)
if "ignore-term" in behaviour:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if "engine-core" in behaviour:
    # Like vLLM's EngineCore: a second process in the server's process group.
    core = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    with open(os.path.join(state, f"core-{os.getpid()}"), "w") as fh:
        fh.write(str(core.pid))
time.sleep(float(os.environ.get("FAKE_VLLM_DELAY", "0")))


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        hung = os.path.exists(os.path.join(state, f"unhealthy-{os.getpid()}"))
        self.send_response(404 if self.path != "/health" else 503 if hung else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer((args.host, args.port), Handler).serve_forever()
"""

SPEC = ServeSpec(
    model="/models/smol",
    served_model_name="smol",
    tensor_parallel_size=1,
    dtype="float32",
    max_model_len=2048,
    gpu_memory_utilization=0.3,
)

MakeServer = Callable[..., VLLMServer]


@pytest.fixture
def state(tmp_path: Path) -> Path:
    folder = tmp_path / "state"
    folder.mkdir()
    return folder


@pytest.fixture
def make_server(tmp_path: Path, state: Path) -> Iterator[MakeServer]:
    script = tmp_path / "fake_vllm_serve.py"
    script.write_text(FAKE_SERVE)
    made: list[VLLMServer] = []

    def make(behaviour: str = "", spec: ServeSpec = SPEC, startup_timeout: float = 20, **env: str) -> VLLMServer:
        environ = {**os.environ, "FAKE_VLLM_STATE": str(state), "FAKE_VLLM": behaviour, **env}
        server = VLLMServer(
            spec,
            log_dir=tmp_path / "logs",
            command=[sys.executable, str(script)],
            env=environ,
            startup_timeout=startup_timeout,
        )
        made.append(server)
        return server

    yield make
    for server in made:
        server.stop(timeout=5)


def _gone(pid: int, within: float = 10) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # A zombie (exited, not yet reaped by its parent) counts as gone.
        try:
            if Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z"):
                return True
        except (OSError, IndexError):
            return True
        time.sleep(0.05)
    return False


def _argv_of(state: Path, pid: int) -> list[str]:
    argv: list[str] = json.loads((state / f"argv-{pid}.json").read_text())
    return argv


def test_a_started_server_answers_health_on_a_loopback_port(make_server: MakeServer, state: Path) -> None:
    server = make_server()
    server.start()
    assert server.alive() and server.healthy()
    assert server.base_url == f"http://127.0.0.1:{server.port}"
    assert server.pid is not None
    assert server.pid_path.read_text().strip() == str(server.pid)
    assert "fake vllm serve starting" in server.log_path.read_text()
    assert server in vllm_server.running_servers()
    assert "healthy" in server.describe()


def test_the_agents_engine_options_reach_the_command_line(make_server: MakeServer, state: Path) -> None:
    spec = ServeSpec(
        model="/models/llama-70b-awq",
        served_model_name="llama",
        tensor_parallel_size=4,
        dtype="float16",
        max_model_len=8192,
        gpu_memory_utilization=0.85,
        quantization="awq",
    )
    server = make_server(spec=spec)
    server.start()
    assert server.pid is not None
    argv = _argv_of(state, server.pid)
    pairs = dict(zip(argv[::2], argv[1::2], strict=True))
    assert pairs == {
        "--model": "/models/llama-70b-awq",
        "--served-model-name": "llama",
        "--host": "127.0.0.1",
        "--port": str(server.port),
        "--tensor-parallel-size": "4",
        "--dtype": "float16",
        "--gpu-memory-utilization": "0.85",
        "--max-model-len": "8192",
        "--quantization": "awq",
    }


def test_options_left_unset_are_not_passed() -> None:
    args = ServeSpec(model="/m", served_model_name="m").args(8000)
    assert "--max-model-len" not in args and "--quantization" not in args
    assert args[args.index("--dtype") + 1] == "auto"


def test_a_server_that_exits_while_starting_is_reported_with_its_log(make_server: MakeServer) -> None:
    server = make_server("crash")
    with pytest.raises(EngineStartError) as caught:
        server.start()
    message = str(caught.value)
    assert "exited with status 3 while starting" in message
    assert "No available memory for the cache blocks" in message
    assert str(server.log_path) in message
    assert not server.alive()


def test_a_server_that_never_answers_is_given_up_and_killed(make_server: MakeServer, state: Path) -> None:
    server = make_server("mute", startup_timeout=2)
    started = time.monotonic()
    with pytest.raises(EngineStartError, match="did not answer .*/health within 2 s"):
        server.start()
    assert time.monotonic() - started < 15
    (argv_file,) = state.glob("argv-*.json")
    assert _gone(int(argv_file.stem.removeprefix("argv-")))


def test_stop_ends_the_whole_process_group(make_server: MakeServer, state: Path) -> None:
    server = make_server("engine-core")
    server.start()
    pid = server.pid
    assert pid is not None
    core = int((state / f"core-{pid}").read_text())
    server.stop()
    assert _gone(pid) and _gone(core)
    assert not server.alive()
    assert not server.pid_path.exists()
    assert server not in vllm_server.running_servers()
    server.stop()  # twice is fine
    assert server.describe().endswith("stopped")


def test_a_server_that_ignores_sigterm_is_killed(make_server: MakeServer) -> None:
    server = make_server("ignore-term")
    server.start()
    pid = server.pid
    assert pid is not None
    started = time.monotonic()
    server.stop(timeout=1)
    assert _gone(pid)
    assert time.monotonic() - started < 10


def test_a_dead_server_is_restarted_on_the_same_port(make_server: MakeServer) -> None:
    server = make_server()
    server.start()
    first_pid, port = server.pid, server.port
    assert first_pid is not None
    assert server.ensure_running() is False  # alive: nothing to do
    os.killpg(first_pid, signal.SIGKILL)
    assert _gone(first_pid)
    # /proc shows a killed multi-threaded process as a zombie while its other threads still exit;
    # waitpid (and so Popen.poll) reports it a moment later.
    deadline = time.monotonic() + 10
    while server.alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not server.healthy()
    assert "died (exit status -9)" in server.describe()
    assert server.ensure_running() is True
    assert server.healthy()
    assert server.pid != first_pid and server.port == port
    assert server.starts == 2 and server.last_exit == -9
    assert server.pid_path.read_text().strip() == str(server.pid)


def test_a_restart_ends_the_engine_process_a_dead_server_left_behind(make_server: MakeServer, state: Path) -> None:
    server = make_server("engine-core")
    server.start()
    pid = server.pid
    assert pid is not None
    core = int((state / f"core-{pid}").read_text())
    os.kill(pid, signal.SIGKILL)  # the API server alone: its engine process lives on
    assert _gone(pid)
    assert not _gone(core, within=0.5)
    server.ensure_running()
    assert _gone(core)


def test_restart_soon_restarts_in_the_background(make_server: MakeServer) -> None:
    server = make_server(FAKE_VLLM_DELAY="0.5")
    server.start()
    pid = server.pid
    assert pid is not None
    os.killpg(pid, signal.SIGKILL)
    assert _gone(pid)
    server.restart_soon()
    server.restart_soon()  # one restart at a time
    deadline = time.monotonic() + 20
    while not server.healthy() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.healthy() and server.starts == 2


def test_a_server_that_stops_answering_health_is_replaced(make_server: MakeServer, state: Path) -> None:
    server = make_server()
    server.start()
    pid = server.pid
    assert pid is not None
    (state / f"unhealthy-{pid}").touch()
    assert server.alive() and not server.healthy()
    assert "not answering /health" in server.describe()
    assert server.ensure_running() is False  # alive: a reply alone does not judge it hung
    server.restart_soon()
    deadline = time.monotonic() + 20
    while server.pid == pid and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(pid)
    while not server.healthy() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.healthy() and server.pid != pid


def test_wait_exit_reports_how_a_killed_server_ended(make_server: MakeServer) -> None:
    server = make_server()
    server.start()
    assert server.wait_exit(0.2) is None  # still running
    assert server.pid is not None
    os.killpg(server.pid, signal.SIGKILL)
    assert server.wait_exit(5) == -9
    assert server.exit_status() == -9


def test_reporting_a_death_does_not_wait_for_a_restart_in_progress(make_server: MakeServer) -> None:
    server = make_server(FAKE_VLLM_DELAY="3")
    server.start()
    assert server.pid is not None
    os.killpg(server.pid, signal.SIGKILL)
    server.restart_soon()
    time.sleep(0.5)
    assert "starting for" in server.describe()
    started = time.monotonic()
    server.restart_soon()  # another reply that saw the engine die
    assert not server.healthy()
    assert time.monotonic() - started < 1.0


def test_a_stopped_server_is_not_restarted(make_server: MakeServer) -> None:
    server = make_server()
    server.start()
    server.stop()
    with pytest.raises(EngineStartError, match="stopped"):
        server.ensure_running()
    server.restart_soon()
    time.sleep(0.5)
    assert not server.alive()


def test_celery_worker_shutdown_stops_the_servers(make_server: MakeServer) -> None:
    from celery.signals import worker_shutdown

    server = make_server()
    server.start()
    pid = server.pid
    assert pid is not None
    worker_shutdown.send(sender=None)
    assert _gone(pid)
    assert not server.alive()


WORKER = r"""
import sys
from pathlib import Path
from inference.vllm_server import ServeSpec, VLLMServer

server = VLLMServer(
    ServeSpec(model="/m", served_model_name="m"),
    log_dir=Path(sys.argv[1]),
    command=[sys.executable, sys.argv[2]],
)
server.start()
print(server.pid, flush=True)
sys.stdin.readline()
if sys.argv[3] == "exit":
    sys.exit(0)  # atexit stops it
import time
time.sleep(3600)
"""


@pytest.mark.parametrize("how", ["exit", "sigkill"])
def test_a_worker_that_ends_leaves_no_server_behind(tmp_path: Path, state: Path, how: str) -> None:
    script = tmp_path / "fake_vllm_serve.py"
    script.write_text(FAKE_SERVE)
    env = {**os.environ, "FAKE_VLLM_STATE": str(state), "PYTHONPATH": str(Path(vllm_server.__file__).parents[2])}
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(tmp_path / "logs"), str(script), how],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )
    try:
        assert worker.stdin is not None and worker.stdout is not None
        pid = int(worker.stdout.readline())
        argv = _argv_of(state, pid)
        assert health_ok(f"http://127.0.0.1:{argv[argv.index('--port') + 1]}")
        worker.stdin.write(b"go\n")
        worker.stdin.flush()
        if how == "sigkill":
            worker.kill()  # no atexit, no signal handler: the kernel's parent-death signal does it
        worker.wait(30)
        assert _gone(pid)
    finally:
        worker.kill()
        worker.wait()


def test_hosted_mode_without_vllm_installed_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vllm_server, "serve_command", lambda: None)
    hosted = VLLMBackend(model_path="/models/smol", options=options_validate("vllm", {}))
    with pytest.raises(BackendUnavailable) as caught:
        hosted.load()
    assert "make vllm-venv" in str(caught.value) and '"external"' in str(caught.value)
    assert "needs vLLM here" in VLLMBackend.check().detail
