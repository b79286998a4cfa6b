"""GPTQ weight quantization with llm-compressor, written as compressed-tensors (which vLLM loads).

Runs in its own environment (make gptq-venv: llm-compressor pins its own transformers):

    PYTHONPATH=. .venv-gptq/bin/python -m pipeline.jobs.steps gptq '{"source": ..., "output": ...}'

The model is calibrated layer by layer (llm-compressor's sequential pipeline) on text from
``calibration_file`` or on the built-in ``pipeline/jobs/data/calibration.txt``; linear layers
get int4/int8 weights in groups with float activations (W4A16 / W8A16), lm_head stays as it is.
The source folder's tokenizer files are copied byte for byte (they were fixed by hand and must
not be re-derived). The result is written to a sibling folder and renamed into place, so an
interrupted run never leaves a half-written ``output``.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from pipeline.jobs.steps.protocol import StepError, log, progress, threads, tokenizer_files_copy

BUILTIN_CALIBRATION = Path(__file__).resolve().parent.parent / "data" / "calibration.txt"


# Progress bands: loading 0-8, calibration data 8-10, layer-by-layer calibration 10-92, saving 92-100.
_CAL_START, _CAL_END = 10.0, 92.0


def _read_calibration_texts(path: Path) -> list[str]:
    """Documents of a text file (paragraphs) or a JSONL file (each line's "text")."""
    if not path.is_file():
        raise StepError(f"calibration file not found: {path}")
    raw = path.read_text(encoding="utf-8", errors="replace")
    texts: list[str] = []
    if path.suffix.lower() in (".jsonl", ".ndjson") or raw.lstrip().startswith("{"):
        for number, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise StepError(f"{path.name} line {number} is not JSON: {exc}") from exc
            text = row.get("text") if isinstance(row, dict) else None
            if not isinstance(text, str):
                raise StepError(f'{path.name} line {number} has no "text" string field')
            if text.strip():
                texts.append(text.strip())
    else:
        texts = [p.strip() for p in re.split(r"\n\s*\n", raw) if p.strip()]
    if not texts:
        raise StepError(f"calibration file {path.name} has no text")
    return texts


def _calibration_windows(
    texts: list[str], tokenizer: Any, samples: int, max_length: int, seed: int
) -> tuple[list[list[int]], int]:
    """``samples`` windows of ``max_length`` tokens over the shuffled documents, joined by EOS.

    The documents are shuffled (seeded) and tokenized into one stream; the windows start at evenly
    spaced offsets, so a stream shorter than samples x max_length gives overlapping windows (the
    built-in text is about 6k tokens) rather than fewer samples. Returns (windows, stream length).
    """
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    sep = tokenizer.eos_token_id
    stream: list[int] = []
    for i in order:
        ids = tokenizer(texts[i], add_special_tokens=False)["input_ids"]
        stream.extend(ids)
        if sep is not None:
            stream.append(sep)
    if len(stream) < 16:
        raise StepError(f"calibration text is too short ({len(stream)} tokens)")
    length = min(max_length, len(stream))
    last_start = len(stream) - length
    if samples == 1 or last_start == 0:
        starts = [0] * samples
    else:
        starts = [round(k * last_start / (samples - 1)) for k in range(samples)]
    return [stream[s : s + length] for s in starts], len(stream)


def _install_layer_progress(report: Callable[[int, int, str, int, int], None]) -> bool:
    """Report llm-compressor's layer-by-layer loop through its progress bars.

    The sequential pipeline iterates the cached batches of each subgraph (one decoder layer) twice,
    through ``tqdm(..., desc="(i/n): Calibrating")`` and ``"(i/n): Propagating"``; the module's
    ``tqdm`` is replaced by a wrapper that parses the description, reports, and draws no bar.
    Returns False (progress stays coarse) if that module no longer looks like this.
    """
    try:
        from llmcompressor.pipelines.sequential import pipeline as seq
    except ImportError:
        return False
    real_tqdm = getattr(seq, "tqdm", None)
    if real_tqdm is None:
        return False
    pattern = re.compile(r"\((\d+)/(\d+)\):\s*(\w+)")

    def tqdm(iterable: Iterable[Any] | None = None, *args: Any, **kwargs: Any) -> Any:
        match = pattern.match(str(kwargs.get("desc") or ""))
        if match is None or iterable is None:
            return real_tqdm(iterable, *args, **kwargs)
        index, count, phase = int(match[1]), int(match[2]), match[3].lower()
        total = int(kwargs.get("total") or 0)

        def walk() -> Iterator[Any]:
            done = 0
            report(index, count, phase, done, total)
            for item in iterable:
                yield item
                done += 1
                report(index, count, phase, done, total)

        return walk()

    seq.tqdm = tqdm  # type: ignore[attr-defined]
    return True


def _dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def gptq(params: dict[str, Any]) -> dict[str, Any]:
    started = time.monotonic()
    source = Path(params["source"]).expanduser()
    output = Path(params["output"]).expanduser()
    bits = int(params.get("bits", 4))
    group_size = int(params.get("group_size", 64))
    damp_percent = float(params.get("damp_percent", 0.01))
    desc_act = bool(params.get("desc_act", False))
    samples = int(params.get("samples", 64))
    max_length = int(params.get("max_length", 256))
    seed = int(params.get("seed", 0) or 0)
    calibration_file = params.get("calibration_file")

    if bits not in (4, 8):
        raise StepError(f"GPTQ here writes 4- or 8-bit weights, not {bits}-bit")
    if not (source / "config.json").is_file():
        raise StepError(f"{source} is not a Hugging Face model folder (no config.json)")
    if output.exists() and any(output.iterdir()):
        raise StepError(f"output folder {output} already exists and is not empty")
    calibration_path = Path(calibration_file).expanduser() if calibration_file else BUILTIN_CALIBRATION
    texts = _read_calibration_texts(calibration_path)

    progress(0, "loading libraries", force=True)
    import torch

    torch.set_num_threads(threads())
    from compressed_tensors.quantization import (
        QuantizationArgs,
        QuantizationScheme,
        QuantizationStrategy,
        QuantizationType,
    )
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.gptq import GPTQModifier
    from transformers import AutoModelForCausalLM, AutoTokenizer

    random.seed(seed)
    torch.manual_seed(seed)

    progress(3, "loading the model", force=True)
    log(f"loading {source}")
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source, dtype="auto")
    model.eval()
    # Widths must split into whole groups (SmolLM2-135M: 576 and 1536, so 64 fits, 128 does not).
    linears = [m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n != "lm_head"]
    widths = sorted({m.in_features for m in linears})
    uneven = [w for w in widths if w % group_size]
    if uneven:
        raise StepError(
            f"group size {group_size} does not divide the input widths {uneven} of this model's layers; "
            f"use a divisor of {widths} (for example 64 or 32)"
        )

    progress(8, "preparing calibration data", force=True)
    windows, stream_tokens = _calibration_windows(texts, tokenizer, samples, max_length, seed)
    source_name = calibration_path.name if calibration_file else "built-in calibration text"
    overlap = stream_tokens < len(windows) * len(windows[0])
    log(
        f"calibration: {len(windows)} samples x {len(windows[0])} tokens from {source_name} ({stream_tokens} tokens)"
        + (", overlapping windows (the text is shorter than samples x max_length)" if overlap else "")
    )
    dataset = Dataset.from_dict({"input_ids": windows, "attention_mask": [[1] * len(w) for w in windows]})

    # Symmetric int weights in groups, float activations: compressed-tensors' W4A16 / W8A16 presets
    # with the group size set (the presets use 128). lm_head stays in the model's dtype.
    # desc_act (GPTQ's "quantize columns in order of decreasing activation") maps to actorder:
    # "weight" (alias "static") reorders only while quantizing and keeps groups contiguous, so the
    # saved format and the kernels are the same as without it; "group" would also store a g_idx
    # permutation, which not every vLLM kernel handles, so it is not used here.
    weights = QuantizationArgs(
        num_bits=bits,
        type=QuantizationType.INT,
        strategy=QuantizationStrategy.GROUP,
        group_size=group_size,
        symmetric=True,
        dynamic=False,
        actorder="weight" if desc_act else None,
    )
    recipe = GPTQModifier(
        config_groups={"group_0": QuantizationScheme(targets=["Linear"], weights=weights)},
        ignore=["lm_head"],
        dampening_frac=damp_percent,
        actorder="weight" if desc_act else None,
    )

    layer_state = {"logged": 0}

    def report(index: int, count: int, phase: str, done: int, total: int) -> None:
        share = 0.5 if phase.startswith("calib") else 1.0
        part = (share - 0.5) + 0.5 * (done / total if total else 1.0)
        pct = _CAL_START + (_CAL_END - _CAL_START) * ((index - 1) + part) / max(count, 1)
        stage = f"{'calibrating' if phase.startswith('calib') else 'propagating'} layer {index} of {count}"
        progress(pct, stage)
        if phase.startswith("calib") and done == 0 and layer_state["logged"] < index:
            layer_state["logged"] = index
            log(f"layer {index}/{count}")

    if not _install_layer_progress(report):
        log("(llm-compressor's layer loop was not found: progress is reported per stage only)")

    progress(_CAL_START, "calibrating", force=True)
    calibrate_started = time.monotonic()
    try:
        oneshot(
            model=model,
            tokenizer=tokenizer,
            recipe=recipe,
            dataset=dataset,
            num_calibration_samples=len(windows),
            max_seq_length=max_length,
            shuffle_calibration_samples=False,
            batch_size=1,
            pipeline="sequential",
        )
    except torch.fx.proxy.TraceError as exc:
        raise StepError(f"llm-compressor cannot trace this model's layers: {exc}") from exc
    calibrate_seconds = time.monotonic() - calibrate_started
    log(f"calibration done in {calibrate_seconds:.0f} s")

    progress(_CAL_END, "saving", force=True)
    output.parent.mkdir(parents=True, exist_ok=True)
    work = output.parent / f".{output.name}.partial-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    try:
        model.save_pretrained(work, save_compressed=True)
        # Verbatim from the source, over what save_pretrained wrote.
        copied = tokenizer_files_copy(source, work, also=("generation_config.json",))
        log(f"copied from the source: {', '.join(copied)}")
        config = json.loads((work / "config.json").read_text())
        qconfig = config.get("quantization_config") or {}
        if qconfig.get("quant_method") != "compressed-tensors":
            raise StepError("the saved model has no compressed-tensors quantization_config")
        if output.exists():
            output.rmdir()  # checked empty above
        os.replace(work, output)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    size = _dir_size(output)
    label = f"GPTQ W{bits}A16 g{group_size}" + (" act-order" if desc_act else "")
    log(f"wrote {output} ({size / 1e6:.1f} MB): {', '.join(sorted(p.name for p in output.iterdir()))}")
    progress(100, "done", force=True)
    return {
        "format": "compressed-tensors",
        "quantization": label,
        "path": str(output),
        "size_bytes": size,
        "seconds": round(time.monotonic() - started, 1),
        "calibration_seconds": round(calibrate_seconds, 1),
        "samples": len(windows),
        "sample_tokens": len(windows[0]),
        "calibration_tokens": stream_tokens,
    }
