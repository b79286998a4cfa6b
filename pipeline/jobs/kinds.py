"""The job kinds: a typed parameter schema each, the formats it takes, and what it runs.

A kind's ``run`` gets a ``JobContext`` (``pipeline.jobs.context``) and its validated params; it
runs its heavy steps in child processes through ``ctx.step`` and returns the artifacts it made.
Parameters are pydantic models with ``extra="forbid"``: a misspelt or out-of-range field answers
400 naming it (``params.type``), before anything is queued.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from inference.models import ModelArtifact
from pipeline.jobs.base import ChainStep, Format, Kind, Output, Params
from pipeline.jobs.benchmark import BENCHMARK
from pipeline.jobs.context import JobContext
from pipeline.jobs.finetune import FINETUNE
from pipeline.jobs.synthesize import SYNTHESIZE

__all__ = ["KINDS", "ChainStep", "Format", "Kind", "Output", "Params"]


class ConvertParams(Params):
    to: Literal["hf", "gguf"] = Field(description="hf: GGUF -> Hugging Face; gguf: Hugging Face -> GGUF.")
    outtype: Literal["f16", "f32", "q8_0"] = Field("f16", description="GGUF tensor type (to=gguf only).")


class QuantizeGGUFParams(Params):
    type: Literal["Q4_0", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0"] = Field("Q4_K_M", description="llama.cpp quant type.")
    allow_requantize: bool = Field(False, description="Quantize an already quantized GGUF (loses quality).")


class ExportOpenVINOParams(Params):
    weight_format: Literal["fp16", "int8", "int4"] = Field("int4", description="Weight compression.")
    group_size: int = Field(64, description="int4: weights per scale; -1 per channel. SmolLM2 needs 64.")
    ratio: float = Field(1.0, gt=0, le=1, description="int4: share of layers in int4, the rest int8.")
    sym: bool = Field(False, description="int4: symmetric quantization.")

    @field_validator("group_size")
    @classmethod
    def _group_size(cls, value: int) -> int:
        if value != -1 and value < 1:
            raise ValueError("must be -1 (per channel) or a positive number")
        return value


class QuantizeRTNParams(Params):
    bits: Literal[8, 4] = Field(8, description="Per-row absmax round-to-nearest, int8 or int4.")


class GPTQParams(Params):
    bits: Literal[4, 8] = Field(4, description="Weight bits.")
    group_size: int = Field(64, ge=-1, description="Weights per scale; -1 per channel. SmolLM2 needs 64.")
    damp_percent: float = Field(0.01, gt=0, lt=1, description="Dampening of the Hessian's diagonal.")
    desc_act: bool = Field(False, description="Quantize columns in order of decreasing activation.")
    dataset: int | None = Field(None, description="A dataset artifact for calibration; default: built-in text.")
    samples: int = Field(64, ge=1, le=2048, description="Calibration samples.")
    max_length: int = Field(256, ge=16, le=4096, description="Tokens per calibration sample.")
    seed: int = Field(0, description="Random seed.")


class EvaluateParams(Params):
    max_tokens: int = Field(1024, ge=64, le=65536, description="Held-out tokens the perplexity is measured on.")
    prompt: str = Field("What is the capital of France?", min_length=1, max_length=2000)
    sample_tokens: int = Field(32, ge=1, le=512, description="Tokens of the greedy sample.")


def _step_result_details(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k not in ("format", "quantization")}


def run_convert(ctx: JobContext, p: ConvertParams) -> list[Output]:
    src = ctx.source
    if p.to == "hf":
        out = ctx.step("gguf_to_hf", {"source": src.path, "output": str(ctx.workdir / "model")}, span=(0, 100))
        return [Output("model", Format.HF, "f32", "HF f32", _step_result_details(out))]
    name = f"model-{p.outtype}.gguf"
    out = ctx.step(
        "hf_to_gguf", {"source": src.path, "output": str(ctx.workdir / name), "outtype": p.outtype}, span=(0, 100)
    )
    return [Output(name, Format.GGUF, out["quantization"], f"GGUF {out['quantization']}", _step_result_details(out))]


def run_quantize_gguf(ctx: JobContext, p: QuantizeGGUFParams) -> list[Output]:
    name = f"model-{p.type}.gguf"
    out = ctx.step(
        "quantize_gguf",
        {"source": ctx.source.path, "output": str(ctx.workdir / name), "type": p.type,
         "allow_requantize": p.allow_requantize},
        span=(0, 100),
    )  # fmt: skip
    return [Output(name, Format.GGUF, out["quantization"], f"GGUF {out['quantization']}", _step_result_details(out))]


def run_export_openvino(ctx: JobContext, p: ExportOpenVINOParams) -> list[Output]:
    params = {"source": ctx.source.path, "output": str(ctx.workdir / "ir"), **p.model_dump(exclude={"source"})}
    out = ctx.step("export_openvino", params, span=(0, 100))
    return [Output("ir", Format.OPENVINO, out["quantization"], f"OpenVINO {out['quantization']}",
                   _step_result_details(out))]  # fmt: skip


def run_quantize_rtn(ctx: JobContext, p: QuantizeRTNParams) -> list[Output]:
    out = ctx.step(
        "quantize_rtn", {"source": ctx.source.path, "output": str(ctx.workdir / "rtn"), "bits": p.bits}, span=(0, 100)
    )
    return [Output("rtn", Format.RTN, out.get("quantization") or f"RTN int{p.bits}", f"RTN int{p.bits}",
                   _step_result_details(out))]  # fmt: skip


def run_gptq(ctx: JobContext, p: GPTQParams) -> list[Output]:
    params: dict[str, Any] = {
        "source": ctx.source.path, "output": str(ctx.workdir / "gptq"), "bits": p.bits, "group_size": p.group_size,
        "damp_percent": p.damp_percent, "desc_act": p.desc_act, "samples": p.samples, "max_length": p.max_length,
        "seed": p.seed,
    }  # fmt: skip
    if p.dataset is not None:
        params["calibration_file"] = ModelArtifact.objects.get(pk=p.dataset).path
    out = ctx.step("gptq", params, span=(0, 100), env="gptq")
    quant = out.get("quantization") or f"GPTQ W{p.bits}A16 g{p.group_size}"
    details = {**_step_result_details(out), "python_env": "gptq"}
    return [Output("gptq", Format.HF, quant, quant, details)]


def run_evaluate(ctx: JobContext, p: EvaluateParams) -> list[Output]:
    src = ctx.source
    params = {"format": src.format, "path": src.path, **p.model_dump(exclude={"source"})}
    out = ctx.step("evaluate", params, span=(0, 100), env=(src.details or {}).get("python_env", "main"))
    ctx.evaluation_save(out)
    return []


def _convert_source(p: ConvertParams, source: ModelArtifact) -> str | None:
    wanted = Format.GGUF if p.to == "hf" else Format.HF
    if source.format != wanted:
        return f"to={p.to} converts a {wanted.label} model; artifact {source.pk} is {source.get_format_display()}"
    if p.to == "gguf" and (source.details or {}).get("python_env"):
        return f"artifact {source.pk} is quantized ({source.quantization}); convert its float parent instead"
    return None


def _float_hf_source(p: Any, source: ModelArtifact) -> str | None:
    if (source.details or {}).get("python_env"):
        return f"artifact {source.pk} is already quantized ({source.quantization}); use a float Hugging Face model"
    return None


KINDS: dict[str, Kind] = {
    k.name: k
    for k in [
        Kind("convert", ConvertParams, (Format.GGUF, Format.HF), run_convert,
             "GGUF -> Hugging Face (transformers, tokenizer fixed from the GGUF), or Hugging Face -> GGUF "
             "(llama.cpp's convert_hf_to_gguf.py)", source_check=_convert_source,
             makes=lambda p: Format.HF if p.to == "hf" else Format.GGUF),
        Kind("quantize_gguf", QuantizeGGUFParams, (Format.GGUF,), run_quantize_gguf,
             "llama.cpp's own quantizer (llama_model_quantize) on an f16/f32 GGUF", makes=lambda p: Format.GGUF),
        Kind("export_openvino", ExportOpenVINOParams, (Format.HF,), run_export_openvino,
             "Hugging Face -> OpenVINO IR with NNCF weight compression and OpenVINO tokenizers (optimum-intel)",
             source_check=_float_hf_source, makes=lambda p: Format.OPENVINO),
        Kind("quantize_rtn", QuantizeRTNParams, (Format.HF,), run_quantize_rtn,
             "Per-row absmax round-to-nearest of the linear weights: the baseline", source_check=_float_hf_source,
             makes=lambda p: Format.RTN),
        Kind("gptq", GPTQParams, (Format.HF,), run_gptq,
             "GPTQ with llm-compressor on CPU, written as compressed-tensors for vLLM", source_check=_float_hf_source,
             makes=lambda p: Format.HF),
        FINETUNE,
        SYNTHESIZE,
        Kind("evaluate", EvaluateParams, (Format.GGUF, Format.HF, Format.OPENVINO, Format.RTN), run_evaluate,
             "Perplexity on held-out text, size, decode tokens/s and a greedy sample"),
        BENCHMARK,
    ]
}  # fmt: skip
