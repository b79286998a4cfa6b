"""Step 2, Hugging Face folder -> OpenVINO IR, and the cached GGUF -> IR pipeline built on both steps."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

from pipeline.convert.child import run_command, run_step
from pipeline.convert.common import (
    BUNDLED_EXPORT,
    EXPORT_MARKER,
    RECIPE_VERSION,
    ROUND_TRIP_TEXT,
    ConversionError,
    ExportSettings,
    Log,
    export_info,
    gguf_fingerprint,
    model_cache_root,
)
from pipeline.convert.hf import gguf_to_hf


def hf_to_openvino(
    hf_dir: Path | str,
    out_dir: Path | str,
    *,
    weight_format: Literal["int4", "int8"] = "int4",
    group_size: int = 64,
    ratio: float = 1.0,
    sym: bool = False,
    expected_eos_token_id: int | None = None,
    timeout: float | None = 3600,
) -> dict[str, Any]:
    """Export a Hugging Face folder to an OpenVINO IR folder that openvino-genai can load."""
    settings = ExportSettings(weight_format=weight_format, group_size=group_size, ratio=ratio, sym=sym)
    hf_dir, out_dir = Path(hf_dir).resolve(), Path(out_dir).resolve()
    if not (hf_dir / "config.json").is_file():
        raise ConversionError("optimum_export", f"not a Hugging Face model folder (no config.json): {hf_dir}")
    argv = [
        sys.executable, "-m", "pipeline.convert", "optimum-cli", "export", "openvino",
        "--model", str(hf_dir), "--task", "text-generation-with-past",
        *settings.optimum_args(), str(out_dir),
    ]  # fmt: skip
    run_command("optimum_export", argv, timeout=timeout)
    if not (out_dir / "openvino_model.xml").is_file():
        raise ConversionError("optimum_export", f"optimum-cli finished but wrote no openvino_model.xml in {out_dir}")
    made_tokenizer = False
    if not _has_ov_tokenizers(out_dir):
        # optimum only warns when openvino-tokenizers cannot convert; do it here so the error shows.
        run_step("convert_tokenizer", ["tokenizer", str(hf_dir), str(out_dir)], timeout=timeout)
        made_tokenizer = True
    check_args = ["verify-ir", str(out_dir)]
    if expected_eos_token_id is not None:
        check_args.append(str(expected_eos_token_id))
    checks = run_step("verify_ir", check_args, timeout=timeout)
    return {"settings": asdict(settings), "tokenizer_made_here": made_tokenizer, "checks": checks}


def openvino_ir_from_gguf(
    gguf_path: Path | str,
    *,
    settings: ExportSettings = BUNDLED_EXPORT,
    out_dir: Path | str | None = None,
    cache_root: Path | str | None = None,
    log: Log | None = None,
) -> Path:
    """The OpenVINO IR folder for a GGUF, converting it unless a complete one is already there.

    Without ``out_dir`` the folder lives under ``cache_root`` (default ``model_cache_root()``),
    named after the GGUF, its fingerprint and the settings. The work happens in a sibling
    folder that is renamed into place at the end, so a reader never sees a half-written export.
    """
    say = log or (lambda _msg: None)
    gguf_path = Path(gguf_path).resolve()
    if not gguf_path.is_file():
        raise ConversionError("gguf_to_hf", f"GGUF file not found: {gguf_path}")
    fingerprint = gguf_fingerprint(gguf_path)
    if out_dir is None:
        root = Path(cache_root).expanduser() if cache_root else model_cache_root()
        out = root / f"{gguf_path.stem}-{fingerprint}-{settings.slug()}-ov"
    else:
        out = Path(out_dir).expanduser().resolve()
    info = export_info(out)
    if info is not None:
        same = info.get("gguf_fingerprint") == fingerprint and info.get("settings") == asdict(settings)
        if same and info.get("recipe_version") == RECIPE_VERSION:
            say(f"reusing the complete export in {out}")
            return out
        if not (same and out_dir is None):
            raise ConversionError(
                "prepare", f"{out} holds an export of another GGUF, settings or recipe; choose another folder"
            )
        say(f"the cached export in {out} was made by an older recipe; converting again")
        shutil.rmtree(out)
    if out.exists() and any(out.iterdir()):
        raise ConversionError("prepare", f"{out} exists, is not empty and holds no complete export")

    out.parent.mkdir(parents=True, exist_ok=True)
    work = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    started = time.monotonic()
    try:
        say(f"1/2 GGUF -> Hugging Face folder ({gguf_path.name})")
        hf_report = gguf_to_hf(gguf_path, work / "hf")
        say(f"    tokenizer fixes: {', '.join(hf_report['fixes']) or 'none needed'}")
        say(f"2/2 Hugging Face -> OpenVINO IR ({settings.slug()})")
        ov_report = hf_to_openvino(
            work / "hf",
            work / "ir",
            weight_format=settings.weight_format,
            group_size=settings.group_size,
            ratio=settings.ratio,
            sym=settings.sym,
            expected_eos_token_id=hf_report["gguf"]["eos_token_id"],
        )
        seconds = round(time.monotonic() - started, 1)
        marker = {
            "recipe_version": RECIPE_VERSION,
            "gguf": str(gguf_path),
            "gguf_fingerprint": fingerprint,
            "settings": asdict(settings),
            "seconds": seconds,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "tokenizer_fixes": hf_report["fixes"],
            "versions": ov_report["checks"].pop("versions", {}),
            "checks": ov_report["checks"],
        }
        (work / "ir" / EXPORT_MARKER).write_text(json.dumps(marker, indent=2))
        try:
            if out.exists():
                out.rmdir()  # empty, checked above
            os.replace(work / "ir", out)
        except OSError:
            if export_info(out) is None:
                raise
            say("another process finished the same export first; using its folder")
        say(f"done in {seconds} s: {out}")
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def openvino_ir_for_bundled(cache_root: Path | str | None = None, *, log: Log | None = None) -> Path:
    """The bundled SmolLM2 GGUF as an int4 OpenVINO IR, converted once and cached."""
    from inference.bundled import bundled_model_path

    return openvino_ir_from_gguf(bundled_model_path(), settings=BUNDLED_EXPORT, cache_root=cache_root, log=log)


def _has_ov_tokenizers(ir_dir: Path) -> bool:
    return (ir_dir / "openvino_tokenizer.xml").is_file() and (ir_dir / "openvino_detokenizer.xml").is_file()


# --- In the child -----------------------------------------------------------------------------


def child_convert_tokenizer(hf_dir: Path, ir_dir: Path) -> dict[str, Any]:
    import openvino
    from openvino_tokenizers import convert_tokenizer
    from transformers import AutoTokenizer

    hf_tok = AutoTokenizer.from_pretrained(str(hf_dir), local_files_only=True)
    ov_tok, ov_detok = convert_tokenizer(hf_tok, with_detokenizer=True)
    openvino.save_model(ov_tok, str(ir_dir / "openvino_tokenizer.xml"))
    openvino.save_model(ov_detok, str(ir_dir / "openvino_detokenizer.xml"))
    return {"written": ["openvino_tokenizer.xml", "openvino_detokenizer.xml"]}


def child_verify_ir(ir_dir: Path, eos_token_id: int | None) -> dict[str, Any]:
    from importlib import metadata

    import openvino_genai

    tok = openvino_genai.Tokenizer(str(ir_dir))
    ids = tok.encode(ROUND_TRIP_TEXT, add_special_tokens=False).input_ids.data[0].tolist()
    back = tok.decode(ids)
    problems = []
    if back != ROUND_TRIP_TEXT:
        problems.append(f"round trip changed the text: {back!r}")
    if eos_token_id is not None and tok.get_eos_token_id() != eos_token_id:
        problems.append(f"eos id {tok.get_eos_token_id()}, expected {eos_token_id}")
    if not tok.chat_template:
        problems.append("no chat template")
    if problems:
        raise SystemExit("the OpenVINO tokenizer is wrong: " + "; ".join(problems))
    versions = {}
    for dist in ("openvino", "openvino-genai", "openvino-tokenizers", "optimum-intel", "nncf", "transformers"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return {"round_trip_ids": len(ids), "eos_token_id": tok.get_eos_token_id(), "versions": versions}
