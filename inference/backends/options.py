"""Typed, validated options per backend.

These schemas carry no engine imports, so the admin and the API validate an agent's options on a
machine that has none of the engines installed. Every field has a default, bounds and a
description, as llama-cpp-python's server settings do.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, ValidationError, model_validator


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LlamaCppOptions(_Options):
    n_ctx: int | None = Field(
        None, ge=128, le=1_048_576, description="Context size; defaults to the agent's context window."
    )
    n_threads: int | None = Field(None, ge=1, le=512, description="CPU threads; default: llama.cpp's choice.")
    n_batch: int = Field(512, ge=1, le=65_536, description="Prompt-processing batch size.")
    n_gpu_layers: int = Field(0, ge=-1, le=1000, description="Layers offloaded to a GPU; -1 = all.")
    use_mmap: bool = Field(True, description="Memory-map the GGUF instead of reading it in.")
    seed: int | None = Field(None, ge=0, description="Sampling seed; None = random.")


class OpenVINOOptions(_Options):
    device: Literal["CPU", "GPU", "NPU", "AUTO"] = Field("CPU", description="OpenVINO device.")
    cache_dir: str | None = Field(None, description="Folder for compiled-model cache (speeds GPU/NPU loads).")
    performance_hint: Literal["LATENCY", "THROUGHPUT"] | None = Field(None, description="OpenVINO performance hint.")
    kv_cache_reuse: bool = Field(True, description="Keep the KV cache between turns of the same session.")


class OpenAICompatOptions(_Options):
    base_url: HttpUrl = Field(description="Server root ending in /v1, e.g. http://127.0.0.1:8080/v1.")
    model: str = Field("", max_length=200, description="Model name the server knows; default: its first.")
    timeout: float = Field(120.0, gt=0, le=3600, description="Seconds to wait for the server.")
    extra_body: dict[str, object] = Field(
        default_factory=dict, description="Extra fields sent with every request (top_k, min_p, ...)."
    )


class VLLMOptions(_Options):
    mode: Literal["hosted", "external"] = Field("hosted", description="Host the engine, or call a server.")
    base_url: HttpUrl | None = Field(None, description="For external mode: the server's /v1 URL.")
    served_model_name: str = Field("", max_length=200, description="Model alias on the server.")
    tensor_parallel_size: int = Field(1, ge=1, le=64, description="GPUs one replica spans.")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field("auto", description="Weights dtype.")
    max_model_len: int | None = Field(None, ge=128, le=1_048_576, description="Context length.")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="Share of GPU memory for vLLM.")
    quantization: Literal["gptq", "awq", "fp8"] | None = Field(None, description="Weights quantization.")
    top_k: int | None = Field(None, ge=-1, description="Sampling top-k.")
    min_p: float | None = Field(None, ge=0, le=1, description="Sampling min-p.")
    seed: int | None = Field(None, ge=0, description="Sampling seed.")
    timeout: float = Field(120.0, gt=0, le=3600, description="External mode: seconds to wait for the server.")

    @model_validator(mode="after")
    def _external_needs_a_url(self) -> VLLMOptions:
        if self.mode == "external" and self.base_url is None:
            raise ValueError("external mode needs base_url (the vLLM server's /v1 URL)")
        return self


OPTIONS_SCHEMAS: dict[str, type[_Options]] = {
    "llama_cpp": LlamaCppOptions,
    "openvino": OpenVINOOptions,
    "openai_compat": OpenAICompatOptions,
    "vllm": VLLMOptions,
}


class OptionsError(ValueError):
    """Options that do not fit the backend's schema; ``messages`` is one line per problem."""

    def __init__(self, messages: list[str]) -> None:
        super().__init__("; ".join(messages))
        self.messages = messages


def options_validate(backend: str, options: dict[str, object]) -> _Options:
    schema = OPTIONS_SCHEMAS.get(backend)
    if schema is None:
        raise OptionsError([f"unknown backend {backend!r}"])
    if not isinstance(options, dict):
        raise OptionsError(["options must be a JSON object"])
    try:
        return schema.model_validate(options)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "options"
            lines.append(f"{where}: {err['msg']}")
        raise OptionsError(lines) from None
