"""Child processes that run third-party ML code on files staff provide: what they inherit, and
how they die with the worker. Used by the job runner's steps (``pipeline.jobs.runner``) and the
conversion children (``pipeline.convert.child``). Standard library only.

- **Environment: an allowlist** (``child_env``). A step runs transformers, peft, optimum,
  llama.cpp or vLLM on a model or dataset someone uploaded; it gets what those libraries need
  (``CHILD_ENV_NAMES``, and the thread and device knobs under ``CHILD_ENV_PREFIXES``) and nothing
  else: never the worker's ``SECRET_KEY``, ``DATABASE_URL``, ``REDIS_URL``, ``METRICS_TOKEN`` or
  API keys. A name under a prefix that looks like a secret (``*_KEY``, ``*_TOKEN``, ``*_URL``,
  ...) is dropped too. What one step needs beyond that (the benchmark's API token) is passed
  explicitly by its caller (``extra``).
- **Parent death: a launcher, not ``preexec_fn``.** ``preexec_fn`` runs Python between fork and
  exec, which CPython documents as unsafe when the parent has threads (a Celery worker has a
  heartbeat thread, the embedded default a pool). As the vLLM launcher does
  (``inference.vllm_server.command.PARENT_DEATH_LAUNCHER``), the child first runs
  ``python -m inference.children <worker pid> <argv...>``: a fresh process that sets
  ``PR_SET_PDEATHSIG`` (kept across exec), checks the worker is still its parent, then execs the
  real command in the same process (same pid, same process group). The kernel sends the signal
  when the *thread* that started the child ends: the runner starts each step from the thread that
  waits for it, so that thread outlives the step.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import sys
from collections.abc import Mapping
from pathlib import Path

_PROJECT_ROOT = Path(__file__).resolve().parents[1]

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


def die_with_parent(argv: list[str]) -> list[str]:
    """``argv`` run through this module's launcher, so the child is killed when this process
    (strictly: the thread that starts it) dies, even by SIGKILL. Linux only; elsewhere as given.
    The child's environment must carry ``PYTHONPATH`` as ``child_env`` sets it."""
    if not sys.platform.startswith("linux"):
        return argv
    return [sys.executable, "-m", "inference.children", str(os.getpid()), *argv]


def _launch(args: list[str]) -> None:  # pragma: no cover - runs in the child, then execs
    if len(args) < 2 or not args[0].isdigit():
        sys.exit("usage: python -m inference.children <parent pid> <program> [args...]")
    parent, argv = int(args[0]), args[1:]
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the worker died before the signal was armed
        sys.exit("error: the worker that started this step is gone")
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        sys.exit(f"error: could not start {argv[0]}: {exc}")


if __name__ == "__main__":
    _launch(sys.argv[1:])
