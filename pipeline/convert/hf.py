"""Step 1, GGUF -> Hugging Face folder: float32 weights and the tokenizer fixed from the GGUF."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from pipeline.convert.child import run_step
from pipeline.convert.common import ROUND_TRIP_TEXT, ConversionError
from pipeline.convert.tokenizer import fix_tokenizer_files, gguf_metadata


def gguf_to_hf(gguf_path: Path | str, out_dir: Path | str, *, timeout: float | None = 3600) -> dict[str, Any]:
    """Write a Hugging Face folder (float32 weights, fixed tokenizer) for a GGUF file.

    Returns what the child reports: the tokenizer fixes it made and the checks it ran.
    """
    gguf_path, out_dir = Path(gguf_path).resolve(), Path(out_dir).resolve()
    if not gguf_path.is_file():
        raise ConversionError("gguf_to_hf", f"GGUF file not found: {gguf_path}")
    return run_step("gguf_to_hf", ["gguf-to-hf", str(gguf_path), str(out_dir)], timeout=timeout)


# --- In the child -----------------------------------------------------------------------------


def child_gguf_to_hf(gguf_path: Path, out_dir: Path) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    meta = gguf_metadata(gguf_path)
    if meta["tokenizer_model"] != "gpt2":
        # The fixes below are written for byte-level BPE; others are converted but flagged.
        print(f"warning: tokenizer model {meta['tokenizer_model']!r} is not byte-level BPE", file=sys.stderr)
    load = {"gguf_file": gguf_path.name, "local_files_only": True}
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), **load)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), dtype=torch.float32, **load)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    del model
    fixes = fix_tokenizer_files(out_dir, meta)
    checks = _check_hf_tokenizer(out_dir, meta)
    return {"gguf": {k: v for k, v in meta.items() if k != "chat_template"}, "fixes": fixes, "checks": checks}


def _check_hf_tokenizer(hf_dir: Path, meta: dict[str, Any]) -> dict[str, Any]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(hf_dir), local_files_only=True)
    problems = []
    ids = tok.encode(ROUND_TRIP_TEXT, add_special_tokens=True)
    back = tok.decode(ids, skip_special_tokens=False)
    if back != ROUND_TRIP_TEXT:
        problems.append(f"round trip changed the text: {back!r}")
    if meta["bos_token_id"] is not None and not meta["add_bos_token"] and ids[:1] == [meta["bos_token_id"]]:
        problems.append("encode adds the bos token")
    if tok.eos_token_id != meta["eos_token_id"]:
        problems.append(f"eos id {tok.eos_token_id}, the GGUF says {meta['eos_token_id']}")
    if len(tok) != meta["vocab_size"]:
        problems.append(f"vocabulary of {len(tok)}, the GGUF has {meta['vocab_size']}")
    if not tok.chat_template:
        problems.append("no chat template")
    if problems:
        raise SystemExit("the converted tokenizer disagrees with the GGUF: " + "; ".join(problems))
    return {"round_trip_ids": len(ids), "class": type(tok).__name__}
