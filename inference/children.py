"""Child processes: what they inherit, how they start and die, and the lines they report in.

The one helper for every child the platform starts: a job's steps (``pipeline.jobs.runner``), the
conversion children (``pipeline.convert.child``), the vLLM server of a vllm worker
(``inference.vllm_server``), the benchmark's raw engine servers (``pipeline.bench.sweep``) and the
processes the tests and benchmarks start (``tools.launch``). Standard library only, and no Django:
the steps import it inside their own child processes.

- **Environment: an allowlist** (``child_env``). A step runs transformers, peft, optimum,
  llama.cpp or vLLM on a model or dataset someone uploaded; it gets what those libraries need
  (``CHILD_ENV_NAMES``, and the thread and device knobs under ``CHILD_ENV_PREFIXES``) and nothing
  else: never the worker's ``SECRET_KEY``, ``DATABASE_URL``, ``REDIS_URL``, ``METRICS_TOKEN`` or
  API keys. A name under a prefix that looks like a secret (``*_KEY``, ``*_TOKEN``, ``*_URL``,
  ...) is dropped too. What one step needs beyond that (the benchmark's API token) is passed
  explicitly by its caller (``extra``).
- **Its own process group** (``spawn``, ``group_stop``). A child runs in a new session, so a stop
  reaches the processes it started too (vLLM's engine core, a tokenizer's workers): SIGTERM to
  the group, a grace period, then SIGKILL to whatever is left.
- **Parent death: a launcher, not ``preexec_fn``.** ``preexec_fn`` runs Python between fork and
  exec, which CPython documents as unsafe when the parent has threads (a Celery worker has a
  heartbeat thread, the embedded default a pool). The child first runs a few lines of Python
  (``_LAUNCHER``) that set ``PR_SET_PDEATHSIG`` (kept across exec), check the parent is still
  there, then exec the real command in the same process (same pid, same process group). The
  kernel sends the signal when the *thread* that started the child ends: a caller either starts
  the child from the thread that waits for it (a job's step), or asks for ``lasting=True`` (one
  thread per process starts it: a vLLM server outlives the reply that started it).
- **A line protocol** (``progress_line``, ``result_line``, ``line_parse``, ``lines_follow``). A
  child reports on stdout: ``CHATSITE_PROGRESS {json}`` lines, one ``CHATSITE_RESULT {json}``,
  ``error: <why>`` for a failure a person can act on; every other line is its log. One prefix
  format, parsed here only; a malformed protocol line is logged, never fatal.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

log = logging.getLogger(__name__)

_PROJECT_ROOT = Path(__file__).resolve().parents[1]

# --- The environment --------------------------------------------------------------------------

# Passed through by exact name: the basics, the knobs the steps and their libraries read, caches.
CHILD_ENV_NAMES = frozenset(
    {
        # The basics a process expects.
        "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TEMP", "TMP",
        # Threads (pipeline.jobs.steps.protocol.threads, inference.llama_runtime).
        "JOB_THREADS", "LLAMA_THREADS", "LLAMA_THREADS_CACHE", "LLAMA_CPU_VARIANT",
        # Where the tools and caches are (pipeline.jobs.steps.gguf, pipeline.convert.common).
        "LLAMA_CPP_CONVERTER_DIR", "CHATSITE_MODEL_CACHE",
        "HF_HOME", "HF_HUB_CACHE", "HF_DATASETS_CACHE", "HF_MODULES_CACHE", "HUGGINGFACE_HUB_CACHE",
        "TRANSFORMERS_CACHE", "XDG_CACHE_HOME", "TORCH_HOME", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR",
        # Devices and the libraries they need.
        "NVIDIA_VISIBLE_DEVICES", "PYTORCH_CUDA_ALLOC_CONF", "LD_LIBRARY_PATH", "ZE_AFFINITY_MASK",
    }
)  # fmt: skip
# Passed through by prefix: locale, OpenMP / MKL / OpenBLAS threads, CUDA devices, vLLM's knobs
# (the benchmark step may start vLLM's own server), each unless the name looks like a secret.
CHILD_ENV_PREFIXES = ("LC_", "OMP_", "KMP_", "GOMP_", "MKL_", "OPENBLAS_", "CUDA_", "VLLM_")
_SECRET_LOOKING = re.compile(r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL|AUTH|_URL$|_URI$|_DSN$", re.IGNORECASE)
# Set for every child: no model hub (the artifact on disk is the only source), no telemetry.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONUNBUFFERED": "1",
}


def _passes(name: str) -> bool:
    if name in CHILD_ENV_NAMES:
        return True
    return name.startswith(CHILD_ENV_PREFIXES) and not _SECRET_LOOKING.search(name)


def child_env(*, extra: Mapping[str, str] | None = None, parent: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a child that runs third-party code: the allowlisted part of ``parent``
    (default: this process's), the offline flags, ``PYTHONPATH`` with the project first, then
    ``extra`` (a step's own secrets, which never go in its params: the log shows those)."""
    source = os.environ if parent is None else parent
    env = {name: value for name, value in source.items() if _passes(name)}
    env.update(OFFLINE_ENV)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PROJECT_ROOT), source.get("PYTHONPATH")) if p)
    env.update(extra or {})
    return env


# --- Starting: own group, dies with its parent ------------------------------------------------

# Run by a fresh interpreter (``-I -S``: nothing from the environment or site-packages, so it
# needs no PYTHONPATH and starts in a few milliseconds) that then becomes the real command.
# argv: <parent pid> <signal number> <program> [args...]. 1 = PR_SET_PDEATHSIG.
_LAUNCHER = (
    "import ctypes, os, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, int(sys.argv[2]))\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit('error: the process that started this one is gone')\n"
    "try:\n"
    "    os.execvp(sys.argv[3], sys.argv[3:])\n"
    "except OSError as exc:\n"
    "    sys.exit(f'error: could not start {sys.argv[3]}: {exc}')\n"
)


def die_with_parent(argv: Sequence[str], *, death_signal: int = signal.SIGKILL) -> list[str]:
    """``argv`` run through the launcher, so the kernel sends ``death_signal`` to the child when
    this process (strictly: the thread that starts it) dies, even by SIGKILL. Linux only;
    elsewhere ``argv`` as given."""
    if not sys.platform.startswith("linux"):
        return list(argv)
    return [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(os.getpid()), str(int(death_signal)), *argv]


_lasting: tuple[int, ThreadPoolExecutor] | None = None
_lasting_lock = threading.Lock()


def _lasting_thread() -> ThreadPoolExecutor:
    """One thread that lives as long as this process, made again in a forked child (a prefork
    pool's), which inherits the executor but not its thread."""
    global _lasting
    with _lasting_lock:
        if _lasting is None or _lasting[0] != os.getpid():
            _lasting = (os.getpid(), ThreadPoolExecutor(max_workers=1, thread_name_prefix="children-spawn"))
        return _lasting[1]


def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    stdin: int | IO[Any] | None = subprocess.DEVNULL,
    stdout: int | IO[Any] | None = None,
    stderr: int | IO[Any] | None = None,
    death_signal: int | None = signal.SIGKILL,
    lasting: bool = False,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own process group (a new session; its pid is the group's id).

    ``death_signal``: what the kernel sends it when its starter dies (None: nothing; the child
    then outlives a killed parent). The starter is the calling thread, so that thread must outlive
    the child (the thread that waits for it does); with ``lasting=True`` one thread of this
    process starts it instead, and the child dies with the process.
    """
    command = die_with_parent(argv, death_signal=death_signal) if death_signal is not None else list(argv)

    def popen() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            command,
            env=None if env is None else dict(env),
            cwd=None if cwd is None else str(cwd),
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,  # never preexec_fn: unsafe in a threaded parent
        )

    if lasting:
        return _lasting_thread().submit(popen).result()
    return popen()


# --- Stopping the group -----------------------------------------------------------------------


def group_signal(pgid: int, sig: int) -> bool:
    """Send ``sig`` to process group ``pgid``; False when the group is gone."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:  # the pid was reused by a group that is not ours
        return False
    return True


def group_running(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs (a zombie waiting to be reaped does not)."""
    proc = Path("/proc")
    if not proc.is_dir():  # not Linux: a zombie leader counts as running
        return group_signal(pgid, 0)
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # ended while we looked
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            return True
    return False


def group_stop(proc: subprocess.Popen[bytes], *, grace: float, reap: bool = True) -> int | None:
    """SIGTERM to ``proc``'s process group; SIGKILL to what is left of it after ``grace`` seconds.

    Returns ``proc``'s exit status once reaped. ``reap=False`` where another thread waits for the
    child (a job's step, for its resource usage): this call then never calls ``wait``.
    """
    pgid = proc.pid
    if group_signal(pgid, signal.SIGTERM):
        deadline = time.monotonic() + grace
        while group_running(pgid):
            if time.monotonic() >= deadline:
                log.warning("process group %s still runs %s s after SIGTERM; killing it", pgid, grace)
                break
            time.sleep(0.05)
        group_signal(pgid, signal.SIGKILL)  # what ignored SIGTERM, and anything the leader left
    if reap:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
    return proc.returncode


def wait_with_usage(proc: subprocess.Popen[bytes]) -> tuple[int, int]:
    """Reap ``proc``; its exit status and its peak resident memory in bytes."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    peak = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)  # Linux counts kilobytes
    return proc.returncode, peak


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (bound, then released: a race only with another binder)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


# --- The line protocol ------------------------------------------------------------------------

PROGRESS_PREFIX = "CHATSITE_PROGRESS "
RESULT_PREFIX = "CHATSITE_RESULT "
ERROR_PREFIX = "error: "


def progress_line(percent: float, stage: str = "", *, metrics: Mapping[str, Any] | None = None) -> str:
    """The line a child prints to say it is ``percent`` (0-100) done, at ``stage``."""
    payload: dict[str, Any] = {"progress": max(0.0, min(100.0, float(percent))), "stage": stage}
    if metrics:
        payload["metrics"] = dict(metrics)
    return PROGRESS_PREFIX + json.dumps(payload)


def result_line(payload: Mapping[str, Any]) -> str:
    """The line a child prints once, at its end, with its result."""
    return RESULT_PREFIX + json.dumps(dict(payload))


def error_line(message: str) -> str:
    """The line (on stderr) that says why a child failed, shown to a person as the reason."""
    return ERROR_PREFIX + message


@dataclass(frozen=True)
class Progress:
    percent: float
    stage: str | None = None
    metrics: dict[str, Any] | None = None


@dataclass(frozen=True)
class Line:
    """One parsed line: ``progress`` (with ``progress``), ``result`` (with ``result``) or ``log``."""

    kind: Literal["progress", "result", "log"]
    text: str
    progress: Progress | None = None
    result: dict[str, Any] | None = None


# tqdm and rich progress bars, which fill a log and say nothing the progress line does not.
_PROGRESS_BAR = re.compile(r"\d+%\|.*\|\s*\d+/\d+|[━█]{3,}|\d+(\.\d+)?(it/s|s/it)\]|\d+/\d+ \[[^\]]*\]\s*$")


def is_progress_bar(line: str) -> bool:
    """Whether ``line`` is a library's progress bar (tqdm, rich) rather than something to log."""
    return bool(_PROGRESS_BAR.search(line))


def _malformed(line: str, why: str) -> Line:
    log.warning("a child printed a malformed protocol line (%s): %.200s", why, line)
    return Line("log", line)


def line_parse(line: str) -> Line:
    """What one line of a child's output says. A protocol line that does not parse is a log line
    (and a warning here): a child's bad output never ends its parent's reading."""
    line = line.rstrip("\r\n")
    for prefix in (PROGRESS_PREFIX, RESULT_PREFIX):
        if line.startswith(prefix):
            break
    else:
        return Line("log", line)
    try:
        data = json.loads(line[len(prefix) :])
    except ValueError as exc:
        return _malformed(line, f"not JSON: {exc}")
    if not isinstance(data, dict):
        return _malformed(line, "not a JSON object")
    if prefix == RESULT_PREFIX:
        return Line("result", line, result=data)
    try:
        percent = float(data.get("progress", 0))
    except (TypeError, ValueError):
        return _malformed(line, "progress is not a number")
    stage = data.get("stage")
    metrics = data.get("metrics")
    return Line(
        "progress",
        line,
        progress=Progress(
            percent=max(0.0, min(100.0, percent)),
            stage=str(stage) if stage is not None else None,
            metrics=metrics if isinstance(metrics, dict) else None,
        ),
    )


@dataclass
class Report:
    """What a child said: its result (the last result line), and its last log lines."""

    result: dict[str, Any] | None = None
    last_lines: list[str] = field(default_factory=list)

    def failure_reason(self) -> str:
        """Why it failed, for a person: its last ``error:`` line, else its last line."""
        errors = [line for line in self.last_lines if line.startswith(ERROR_PREFIX)]
        if errors:
            return errors[-1][len(ERROR_PREFIX) :]
        return self.last_lines[-1] if self.last_lines else "no output"


def lines_follow(
    lines: Iterable[bytes | str],
    *,
    on_progress: Callable[[Progress], None] = lambda progress: None,
    on_log: Callable[[str], None] = lambda text: None,
    keep: int = 20,
) -> Report:
    """Read a child's output to its end: progress to ``on_progress``, every log line to ``on_log``
    (and the last ``keep`` into the report), except blank lines and libraries' progress bars."""
    report = Report()
    last: collections.deque[str] = collections.deque(maxlen=keep)
    for raw in lines:
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        parsed = line_parse(text)
        if parsed.kind == "progress" and parsed.progress is not None:
            on_progress(parsed.progress)
        elif parsed.kind == "result":
            report.result = parsed.result
        elif parsed.text.strip() and not is_progress_bar(parsed.text):
            on_log(parsed.text)
            last.append(parsed.text)
    report.last_lines = list(last)
    return report
