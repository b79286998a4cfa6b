"""Evaluate one model artifact: perplexity, size, speed and a greedy sample answer.

Formats: ``gguf`` (llama-cpp-python), ``hf`` (transformers, float32; a compressed-tensors GPTQ folder
too, in a venv that has compressed-tensors), ``openvino`` (perplexity through optimum-intel's
``OVModelForCausalLM``, speed and sample through openvino-genai's ``LLMPipeline`` as the backend
runs it) and ``rtn`` (:func:`pipeline.jobs.steps.rtn.load_rtn`).

Perplexity, the same for every format: the text is tokenized without special tokens (no BOS) by the
artifact's own tokenizer (the HF tokenizer files in the folder; llama.cpp's for a GGUF: for the
bundled SmolLM2 both give identical ids, and ``ppl_token_ids_sha256`` in the result lets anyone check
that two results scored the same ids). The first ``max_tokens`` ids are cut into non-overlapping
windows of ``min(window, context length)`` tokens, each evaluated from an empty cache; every token
but a window's first is predicted from the tokens before it in its window. perplexity =
exp(mean negative log-likelihood over all predicted tokens), log-softmax in float64.

Speed: a raw-text prompt (the first ``speed_prompt_tokens`` ids of the text, no chat template) and
exactly ``speed_tokens`` greedy tokens with end-of-sequence ignored. prefill tokens/s = prompt
tokens / time to the first token; decode tokens/s = (generated - 1) / time from the first to the
last token. Sample: the greedy answer to ``prompt`` through the model's chat template.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.jobs.steps.engines import (
    Engine,
    GGUFEngine,
    OpenVINOEngine,
    TorchEngine,
    ids_digest,
    path_size,
    peak_rss_mb,
)
from pipeline.jobs.steps.protocol import StepError, progress

FORMATS = ("gguf", "hf", "openvino", "rtn")
DEFAULT_TEXT_FILE = Path(__file__).resolve().parent.parent / "data" / "heldout.txt"
DEFAULT_PROMPT = "What is the capital of France?"
DEFAULT_MAX_TOKENS = 1024
DEFAULT_WINDOW = 512
DEFAULT_SAMPLE_TOKENS = 32
DEFAULT_SPEED_TOKENS = 64
DEFAULT_SPEED_PROMPT_TOKENS = 128
METHOD = (
    "non-overlapping windows from an empty cache, no BOS; mean NLL over every token but each "
    "window's first; perplexity = exp(mean NLL)"
)


# ---------------------------------------------------------------- perplexity math (numpy only)


def windows(ids: Sequence[int], size: int) -> list[list[int]]:
    """Non-overlapping windows of ``size`` ids; a last window shorter than 2 predicts nothing and is dropped."""
    if size < 2:
        raise StepError(f"the perplexity window must be at least 2 tokens, not {size}")
    chunks = [list(ids[i : i + size]) for i in range(0, len(ids), size)]
    return [c for c in chunks if len(c) >= 2]


def window_nll(logits: Any, ids: Sequence[int]) -> tuple[float, int]:
    """Summed negative log-likelihood of ``ids[1:]`` given ``logits[:-1]`` (``[len(ids), vocab]``) and the count."""
    import numpy as np

    scores = np.asarray(logits)
    n = len(ids)
    if scores.ndim != 2 or scores.shape[0] < n:
        raise StepError(f"expected logits for {n} positions, got shape {scores.shape}")
    targets = np.asarray(ids[1:], dtype=np.int64)
    total = 0.0
    for start in range(0, n - 1, 128):  # rows in blocks: float64 copies of [128, vocab] at most
        rows = scores[start : min(start + 128, n - 1)].astype(np.float64)
        top = rows.max(axis=1, keepdims=True)
        logz = np.log(np.exp(rows - top).sum(axis=1)) + top[:, 0]
        picked = rows[np.arange(rows.shape[0]), targets[start : start + rows.shape[0]]]
        total += float((logz - picked).sum())
    return total, n - 1


def perplexity(nll_sum: float, count: int) -> float:
    if count <= 0:
        raise StepError("no tokens were predicted: the text is too short for a perplexity")
    return math.exp(nll_sum / count)


# ---------------------------------------------------------------- the step


def _open(fmt: str, path: Path, window: int, params: dict[str, Any]) -> Engine:
    if fmt == "gguf":
        if not path.is_file():
            raise StepError(f"GGUF file not found: {path}")
        return GGUFEngine(path, window)
    if not path.is_dir():
        raise StepError(f"{fmt} artifacts are folders; {path} is not one")
    if fmt in ("hf", "rtn"):
        return TorchEngine(path, fmt)
    return OpenVINOEngine(path, str(params.get("ov_inference_precision", "f32")))


def evaluate(params: dict[str, Any]) -> dict[str, Any]:
    started = time.monotonic()
    fmt = str(params.get("format", ""))
    if fmt not in FORMATS:
        raise StepError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if not params.get("path"):
        raise StepError("evaluate needs the artifact's path")
    path = Path(str(params["path"])).expanduser()
    text_file = Path(str(params.get("text_file") or DEFAULT_TEXT_FILE)).expanduser()
    try:
        text = text_file.read_text(encoding="utf-8")
        max_tokens = int(params.get("max_tokens", DEFAULT_MAX_TOKENS))
        window = int(params.get("window", DEFAULT_WINDOW))
        sample_tokens = int(params.get("sample_tokens", DEFAULT_SAMPLE_TOKENS))
        speed_tokens = int(params.get("speed_tokens", DEFAULT_SPEED_TOKENS))
        speed_prompt_tokens = int(params.get("speed_prompt_tokens", DEFAULT_SPEED_PROMPT_TOKENS))
    except OSError as exc:
        raise StepError(f"cannot read the text file {text_file}: {exc}") from exc
    except (TypeError, ValueError) as exc:
        raise StepError(f"bad numeric parameter: {exc}") from exc
    prompt = str(params.get("prompt") or DEFAULT_PROMPT)

    progress(0, f"loading the {fmt} model", force=True)
    t0 = time.monotonic()
    engine = _open(fmt, path, window, params)
    load_seconds = time.monotonic() - t0
    try:
        window = min(window, engine.context_length or window)
        ids = engine.token_ids(text)
        text_tokens = len(ids)
        ids = ids[:max_tokens]
        chunks = windows(ids, window)
        print(f"{text_file.name}: {text_tokens} tokens; scoring {len(ids)} in {len(chunks)} windows of {window}")

        nll, count = 0.0, 0
        t0 = time.monotonic()
        for i, chunk in enumerate(chunks):
            progress(10 + 60 * i / max(1, len(chunks)), f"perplexity window {i + 1}/{len(chunks)}", force=True)
            s, c = window_nll(engine.window_logits(chunk), chunk)
            nll, count = nll + s, count + c
        ppl_seconds = time.monotonic() - t0
        ppl = perplexity(nll, count)
        print(f"perplexity {ppl:.4f} over {count} predicted tokens ({ppl_seconds:.1f} s)")

        progress(70, "speed", force=True)
        speed_ids = ids[: min(speed_prompt_tokens, len(ids))]
        speed = engine.speed(speed_ids, speed_tokens)
        print(f"speed: {speed}")

        progress(85, "sample", force=True)
        t0 = time.monotonic()
        sample = engine.sample(prompt, sample_tokens)
        print(f"sample ({time.monotonic() - t0:.1f} s): {sample!r}")
        notes = dict(engine.notes)
    finally:
        engine.close()

    progress(100, "done", force=True)
    return {
        "format": fmt,
        "path": str(path),
        "perplexity": round(ppl, 4),
        "ppl_tokens": count,
        "ppl_window": window,
        "ppl_method": METHOD,
        "ppl_text": str(text_file),
        "ppl_text_tokens": text_tokens,
        "ppl_token_ids_sha256": ids_digest(ids),
        "size_bytes": path_size(path),
        "decode_tokens_per_s": speed.get("decode_tokens_per_s"),
        "prefill_tokens_per_s": speed.get("prefill_tokens_per_s"),
        "speed_prompt_tokens": speed.get("speed_prompt_tokens"),
        "speed_generated_tokens": speed.get("speed_generated_tokens"),
        "prompt": prompt,
        "sample": sample,
        "load_seconds": round(load_seconds, 2),
        "perplexity_seconds": round(ppl_seconds, 2),
        "seconds": round(time.monotonic() - started, 2),
        "peak_rss_mb": peak_rss_mb(),
        "engine": notes,
    }
