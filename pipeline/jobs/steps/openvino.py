"""Hugging Face -> OpenVINO IR through optimum-intel's Python export, with OpenVINO tokenizers."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pipeline.convert.openvino_ir import child_convert_tokenizer, child_verify_ir
from pipeline.jobs.steps import protocol
from pipeline.jobs.steps.protocol import StepError, tokenizer_files_copy


def export_openvino(params: dict[str, Any]) -> dict[str, Any]:
    from optimum.intel import OVModelForCausalLM, OVWeightQuantizationConfig

    source, output = Path(params["source"]), Path(params["output"])
    if not (source / "config.json").is_file():
        raise StepError(f"not a Hugging Face model folder (no config.json): {source}")
    weight_format = params.get("weight_format", "int4")
    started = time.monotonic()
    # optimum-intel's Python export: trace to IR, then NNCF weight compression on the IR.
    kwargs: dict[str, Any] = {"export": True, "compile": False, "local_files_only": True}
    if weight_format == "fp16":
        kwargs["load_in_8bit"] = False  # no automatic int8 (optimum does it past 1B parameters)
        label = "fp16"
    else:
        bits = 4 if weight_format == "int4" else 8
        qconfig: dict[str, Any] = {"bits": bits, "sym": bool(params.get("sym", False))}
        if bits == 4:
            qconfig.update(group_size=int(params.get("group_size", 64)), ratio=float(params.get("ratio", 1.0)))
        kwargs["quantization_config"] = OVWeightQuantizationConfig(**qconfig)
        sym = "sym" if qconfig["sym"] else "asym"
        label = f"int{bits} g{qconfig['group_size']} r{qconfig['ratio']:g} {sym}" if bits == 4 else f"int8 {sym}"
    protocol.progress(5, f"exporting to OpenVINO IR and compressing weights ({label})", force=True)
    model = OVModelForCausalLM.from_pretrained(str(source), **kwargs)
    if weight_format == "fp16":
        model.half()
    protocol.progress(70, "saving the IR", force=True)
    model.save_pretrained(str(output))
    del model
    if not (output / "openvino_model.xml").is_file():
        raise StepError("the export wrote no openvino_model.xml")
    protocol.progress(80, "OpenVINO tokenizer and detokenizer", force=True)
    tokenizer_files_copy(source, output)
    child_convert_tokenizer(source, output)
    protocol.progress(90, "checking the tokenizer round trip with openvino-genai", force=True)
    eos = params.get("eos_token_id")
    checks = child_verify_ir(output, int(eos) if eos is not None else None)
    return {
        "format": "openvino",
        "quantization": label,
        "checks": checks,
        "seconds": round(time.monotonic() - started, 1),
    }
