"""GGUF steps: GGUF -> Hugging Face, Hugging Face -> GGUF, and llama.cpp's own quantizer."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import runpy
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from inference.llama_runtime import cpu_backend_load, llama_load
from pipeline.convert.hf import child_gguf_to_hf
from pipeline.jobs.steps import protocol
from pipeline.jobs.steps.protocol import StepError

# llama_model_quantize's file types (llama.h's enum llama_ftype).
FTYPES = {"Q4_0": 2, "Q8_0": 7, "Q4_K_M": 15, "Q5_K_M": 17, "Q6_K": 18}
_FLOAT_FTYPES = {0, 1, 32}  # ALL_F32, MOSTLY_F16, MOSTLY_BF16
ROUND_TRIP_TEXT = "The capital of France is Paris.  Hello , world !\nIt 's 2 o'clock, isn't it ?"


def converter_dir() -> Path:
    """llama.cpp's ``convert_hf_to_gguf.py`` with its ``conversion`` and ``gguf-py`` packages.

    They ship in llama-cpp-python's source distribution (``vendor/llama.cpp``); ``make install``
    unpacks them into ``.venv/share/chatsite/llama.cpp``. ``LLAMA_CPP_CONVERTER_DIR`` overrides.
    """
    configured = os.environ.get("LLAMA_CPP_CONVERTER_DIR")
    return Path(configured) if configured else Path(sys.prefix) / "share" / "chatsite" / "llama.cpp"


def gguf_file_type(path: Path) -> dict[str, Any]:
    """The file type a GGUF states in its metadata, and the block types its tensors really use."""
    from gguf import GGUFReader, LlamaFileType

    reader = GGUFReader(str(path))
    field = reader.fields.get("general.file_type")
    ftype = int(field.contents()) if field is not None else None
    try:
        name = LlamaFileType(ftype).name.removeprefix("MOSTLY_").removeprefix("ALL_") if ftype is not None else None
    except ValueError:
        name = f"type {ftype}"
    tensors = Counter(t.tensor_type.name for t in reader.tensors)
    return {"file_type": ftype, "file_type_name": name, "tensor_types": dict(tensors.most_common())}


# --- GGUF -> Hugging Face ------------------------------------------------------------------


def gguf_to_hf(params: dict[str, Any]) -> dict[str, Any]:
    source, output = Path(params["source"]), Path(params["output"])
    if not source.is_file():
        raise StepError(f"GGUF file not found: {source}")
    started = time.monotonic()
    protocol.progress(5, "loading the GGUF with transformers (dequantized to float32)", force=True)
    report = child_gguf_to_hf(source, output)
    protocol.progress(95, "tokenizer fixed from the GGUF's metadata and checked", force=True)
    protocol.log(f"tokenizer fixes: {', '.join(report['fixes']) or 'none needed'}")
    return {
        "format": "hf",
        "quantization": "f32",
        "architecture": report["gguf"].get("architecture"),
        "context_length": report["gguf"].get("context_length"),
        "tokenizer_fixes": report["fixes"],
        "seconds": round(time.monotonic() - started, 1),
    }


# --- Hugging Face -> GGUF ------------------------------------------------------------------


class _TensorCounter(logging.Handler):
    """Counts the converter's per-tensor log lines ("blk.0.attn_q.weight, torch.float32 --> F16")."""

    def __init__(self, total: int) -> None:
        super().__init__(logging.INFO)
        self.total = max(total, 1)
        self.done = 0

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "-->" in message:
            self.done += 1
            protocol.progress(5 + 80 * min(self.done / self.total, 1.0), f"converting tensor {self.done}/{self.total}")
        elif record.levelno >= logging.WARNING:
            protocol.log(message)


def _count_tensors(hf_dir: Path) -> int:
    import json

    index = hf_dir / "model.safetensors.index.json"
    if index.is_file():
        return len(json.loads(index.read_text())["weight_map"])
    total = 0
    for file in hf_dir.glob("*.safetensors"):
        from safetensors import safe_open

        with safe_open(str(file), "pt") as fh:
            total += len(list(fh.keys()))
    return total


def hf_to_gguf(params: dict[str, Any]) -> dict[str, Any]:
    source, output, outtype = Path(params["source"]), Path(params["output"]), params.get("outtype", "f16")
    if not (source / "config.json").is_file():
        raise StepError(f"not a Hugging Face model folder (no config.json): {source}")
    script = converter_dir() / "convert_hf_to_gguf.py"
    if not script.is_file():
        raise StepError(f"llama.cpp's converter is not installed at {script} (make install unpacks it)")
    started = time.monotonic()
    output.parent.mkdir(parents=True, exist_ok=True)
    counter = _TensorCounter(_count_tensors(source))
    logging.getLogger("hf-to-gguf").addHandler(counter)
    protocol.progress(2, f"converting with llama.cpp's convert_hf_to_gguf.py to {outtype}", force=True)
    # The script puts its own gguf-py first on sys.path; its `conversion` package sits beside it.
    sys.path.insert(0, str(script.parent))
    argv = [str(script), str(source), "--outfile", str(output), "--outtype", outtype]
    if params.get("model_name"):
        argv += ["--model-name", str(params["model_name"])]
    sys.argv = argv
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise StepError(f"convert_hf_to_gguf.py exited with status {exc.code}") from None
    if not output.is_file():
        raise StepError("convert_hf_to_gguf.py wrote no file")
    protocol.progress(90, "checking the GGUF's tokenizer against the Hugging Face one", force=True)
    check = _tokenizer_check(source, output)
    info = gguf_file_type(output)
    protocol.log(f"file type {info['file_type_name']}; tensor types {info['tensor_types']}")
    return {
        "format": "gguf",
        "quantization": info["file_type_name"],
        **info,
        "tokenizer_check": check,
        "seconds": round(time.monotonic() - started, 1),
    }


def _tokenizer_check(hf_dir: Path, gguf_path: Path) -> dict[str, Any]:
    """llama.cpp must tokenize like the Hugging Face tokenizer the model was trained with."""
    from transformers import AutoTokenizer

    hf_ids = AutoTokenizer.from_pretrained(str(hf_dir), local_files_only=True).encode(
        ROUND_TRIP_TEXT, add_special_tokens=False
    )
    llm = llama_load(model_path=str(gguf_path), vocab_only=True, verbose=False)
    ids = llm.tokenize(ROUND_TRIP_TEXT.encode(), add_bos=False, special=False)
    back = llm.detokenize(ids).decode("utf-8", "replace")
    if ids != hf_ids:
        raise StepError(f"llama.cpp tokenizes differently from the Hugging Face tokenizer: {ids[:12]} vs {hf_ids[:12]}")
    if back != ROUND_TRIP_TEXT:
        raise StepError(f"llama.cpp's detokenizer changed the text: {back!r}")
    return {"ids": len(ids), "same_as_hf": True}


# --- llama.cpp's quantizer ----------------------------------------------------------------

_TENSOR_LINE = re.compile(r"\[\s*(\d+)\s*/\s*(\d+)\s*\]")


class _QuantizeLog(io.TextIOBase):
    """Stands in for stderr while llama.cpp quantizes: its "[  12/ 272] blk.0..." lines are progress."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.buffer_text = ""

    def write(self, text: str) -> int:
        self.buffer_text += text
        while "\n" in self.buffer_text:
            line, self.buffer_text = self.buffer_text.split("\n", 1)
            match = _TENSOR_LINE.search(line)
            if match:
                done, total = int(match.group(1)), int(match.group(2))
                protocol.progress(5 + 85 * done / max(total, 1), f"quantizing tensor {done}/{total}")
            elif line.strip():
                self.real.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        self.real.flush()


def quantize_gguf(params: dict[str, Any]) -> dict[str, Any]:
    import ctypes

    import llama_cpp

    source, output, qtype = Path(params["source"]), Path(params["output"]), params["type"]
    if not source.is_file():
        raise StepError(f"GGUF file not found: {source}")
    before = gguf_file_type(source)
    if before["file_type"] not in _FLOAT_FTYPES and not params.get("allow_requantize"):
        raise StepError(
            f"the source is already quantized ({before['file_type_name']}); quantize from an f16 or f32 GGUF"
            " (convert the Hugging Face model with outtype f16 first), or set allow_requantize"
        )
    started = time.monotonic()
    output.parent.mkdir(parents=True, exist_ok=True)
    cpu_backend_load()  # llama.cpp's CPU kernels are loadable modules (inference.llama_runtime)
    qparams = llama_cpp.llama_model_quantize_default_params()
    qparams.ftype = FTYPES[qtype]
    qparams.nthread = int(params.get("threads") or os.cpu_count() or 1)
    qparams.allow_requantize = bool(params.get("allow_requantize"))
    protocol.progress(2, f"quantizing to {qtype} with llama.cpp ({qparams.nthread} threads)", force=True)
    real_stderr = sys.stderr
    with contextlib.redirect_stderr(_QuantizeLog(real_stderr)):
        status = llama_cpp.llama_model_quantize(str(source).encode(), str(output).encode(), ctypes.byref(qparams))
    if status != 0 or not output.is_file():
        raise StepError(f"llama.cpp's quantizer failed (status {status})")
    after = gguf_file_type(output)
    protocol.log(f"file type {after['file_type_name']}; tensor types {after['tensor_types']}")
    return {
        "format": "gguf",
        "quantization": after["file_type_name"],
        **after,
        "source_file_type": before["file_type_name"],
        "seconds": round(time.monotonic() - started, 1),
    }
