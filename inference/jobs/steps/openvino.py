"""Hugging Face -> OpenVINO IR through optimum-intel's Python export, with OpenVINO tokenizers."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from inference.jobs.steps import protocol
from inference.jobs.steps.protocol import StepError


def export_openvino(params: dict[str, Any]) -> dict[str, Any]:
    from optimum.exporters.openvino import main_export
    from optimum.intel import OVConfig, OVWeightQuantizationConfig

    from inference.convert.openvino_ir import child_convert_tokenizer, child_verify_ir

    source, output = Path(params["source"]), Path(params["output"])
    if not (source / "config.json").is_file():
        raise StepError(f"not a Hugging Face model folder (no config.json): {source}")
    weight_format = params.get("weight_format", "int4")
    started = time.monotonic()
    if weight_format == "fp16":
        ov_config = OVConfig(dtype="fp16")
        label = "fp16"
    else:
        bits = 4 if weight_format == "int4" else 8
        qconfig: dict[str, Any] = {"bits": bits, "sym": bool(params.get("sym", False))}
        if bits == 4:
            qconfig.update(group_size=int(params.get("group_size", 64)), ratio=float(params.get("ratio", 1.0)))
        ov_config = OVConfig(quantization_config=OVWeightQuantizationConfig(**qconfig))
        label = f"int{bits}" + (
            f" g{qconfig['group_size']} r{qconfig['ratio']:g} {'sym' if qconfig['sym'] else 'asym'}"
            if bits == 4
            else ""
        )
    protocol.progress(5, f"exporting to OpenVINO IR and compressing weights ({label})", force=True)
    main_export(
        model_name_or_path=str(source),
        output=str(output),
        task="text-generation-with-past",
        ov_config=ov_config,
        local_files_only=True,
        convert_tokenizer=True,
    )
    if not (output / "openvino_model.xml").is_file():
        raise StepError("the export wrote no openvino_model.xml")
    protocol.progress(80, "OpenVINO tokenizer and detokenizer", force=True)
    made_tokenizer = False
    if not ((output / "openvino_tokenizer.xml").is_file() and (output / "openvino_detokenizer.xml").is_file()):
        child_convert_tokenizer(source, output)
        made_tokenizer = True
    protocol.progress(90, "checking the tokenizer round trip with openvino-genai", force=True)
    eos = params.get("eos_token_id")
    checks = child_verify_ir(output, int(eos) if eos is not None else None)
    return {
        "format": "openvino",
        "quantization": label,
        "tokenizer_made_here": made_tokenizer,
        "checks": checks,
        "seconds": round(time.monotonic() - started, 1),
    }
