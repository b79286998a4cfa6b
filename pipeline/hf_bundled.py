"""The bundled SmolLM2 GGUF as a Hugging Face folder, for vLLM (which loads HF folders).

``pipeline.convert.gguf_to_hf`` does the conversion (float32 weights and the tokenizer fixed
from the GGUF's own metadata); this module only caches its result outside the repository, as
``openvino_ir_for_bundled`` does for OpenVINO: under ``model_cache_root()``, named after the
GGUF and its fingerprint, built in a sibling folder and renamed into place once complete, so a
reader (another test run, a worker) never sees a half-written folder.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from pipeline.convert import (
    EXPORT_MARKER,
    ConversionError,
    Log,
    export_info,
    gguf_fingerprint,
    gguf_to_hf,
    model_cache_root,
)

# Bumped when the folder's recipe changes in a way that makes older cached folders wrong.
HF_RECIPE_VERSION = 1


def hf_from_gguf(gguf_path: Path | str, *, cache_root: Path | str | None = None, log: Log | None = None) -> Path:
    """The Hugging Face folder for a GGUF, converting it unless a complete one is cached."""
    say = log or (lambda _msg: None)
    gguf_path = Path(gguf_path).resolve()
    if not gguf_path.is_file():
        raise ConversionError("gguf_to_hf", f"GGUF file not found: {gguf_path}")
    fingerprint = gguf_fingerprint(gguf_path)
    root = Path(cache_root).expanduser() if cache_root else model_cache_root()
    out = root / f"{gguf_path.stem}-{fingerprint}-hf"
    info = export_info(out)
    if info is not None and info.get("recipe_version") == HF_RECIPE_VERSION:
        say(f"reusing the complete Hugging Face folder in {out}")
        return out
    if out.exists():
        say(f"{out} is incomplete or from an older recipe; converting again")
        shutil.rmtree(out)

    root.mkdir(parents=True, exist_ok=True)
    work = root / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    started = time.monotonic()
    try:
        say(f"GGUF -> Hugging Face folder ({gguf_path.name})")
        report: dict[str, Any] = gguf_to_hf(gguf_path, work)
        marker = {
            "recipe_version": HF_RECIPE_VERSION,
            "gguf": str(gguf_path),
            "gguf_fingerprint": fingerprint,
            "seconds": round(time.monotonic() - started, 1),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "tokenizer_fixes": report["fixes"],
            "checks": report["checks"],
        }
        (work / EXPORT_MARKER).write_text(json.dumps(marker, indent=2))
        try:
            os.replace(work, out)
        except OSError:
            if export_info(out) is None:
                raise
            say("another process finished the same conversion first; using its folder")
        say(f"done in {marker['seconds']} s: {out}")
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def hf_for_bundled(cache_root: Path | str | None = None, *, log: Log | None = None) -> Path:
    """The bundled SmolLM2-135M-Instruct GGUF as a Hugging Face folder, converted once and cached."""
    from inference.bundled import bundled_model_path

    return hf_from_gguf(bundled_model_path(), cache_root=cache_root, log=log)
