"""The cost of constrained decoding, per engine, in one run: the same prompts answered free and
under a JSON schema by the platform's own backends (``inference.backends``) on the bundled
SmolLM2-135M: llama.cpp on the GGUF, OpenVINO GenAI on its IR (made by the pipeline's export,
cached). For each: decode tokens/s and the first token's delay, free and constrained, and the
cost of compiling a schema: the first token under the first schema a loaded engine sees, under
another new one, and under one it has compiled (OpenVINO's XGrammar compiles inside
``generate``; llama.cpp's grammar is built and parsed by the backend before it).

    python -m tools.bench_constraints --rounds 3 --max-tokens 96

vLLM is measured through the platform by ``tests/integration/test_vllm_worker.py`` only: its CPU
engine takes minutes to start.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

from inference.backends.base import Backend, GenerationParams
from inference.backends.llama_cpp import LlamaCppBackend, LlamaCppOptions
from inference.backends.openvino import OpenVINOBackend, OpenVINOOptions
from inference.bundled import bundled_model_path
from inference.constraints import JsonSchema
from pipeline.convert import openvino_ir_for_bundled
from tools.launch import ROOT

PROMPTS = [
    "Describe Paris as a JSON object with its country, population and three sights.",
    "Describe a cat as a JSON object with its name, age, colour and two habits.",
    "Describe a car as a JSON object with its make, model, year and top speed.",
    "Describe Tokyo as a JSON object with its country, population and three sights.",
]
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 60},
        "kind": {"type": "string", "enum": ["city", "animal", "vehicle", "other"]},
        "facts": {"type": "array", "items": {"type": "string", "maxLength": 80}, "maxItems": 8},
        "rating": {"type": "integer", "minimum": 0, "maximum": 10},
    },
    "required": ["name", "kind", "facts", "rating"],
    "additionalProperties": False,
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.bench_constraints", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="Times each prompt is answered each way.")
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("LLAMA_THREADS", "2")))
    parser.add_argument("--out", default=str(ROOT / "docs" / "bench" / "constraints"))
    return parser


def _answer(backend: Backend, prompt: str, params: GenerationParams) -> dict[str, float]:
    started = time.perf_counter()
    first = None
    tokens = 0
    for chunk in backend.stream_chat([{"role": "user", "content": prompt}], params):
        if chunk.text and first is None:
            first = time.perf_counter()
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    ended = time.perf_counter()
    first = first or ended
    decode = (tokens - 1) / (ended - first) if tokens > 1 and ended > first else 0.0
    return {"ttft_ms": (first - started) * 1000, "decode_tps": decode, "tokens": tokens}


def _measure(backend: Backend, rounds: int, max_tokens: int) -> dict[str, Any]:
    free = GenerationParams(max_tokens=max_tokens, temperature=0.0, top_p=1.0)
    constrained = GenerationParams(max_tokens=max_tokens, temperature=0.0, top_p=1.0, constraint=JsonSchema(SCHEMA))
    _answer(backend, PROMPTS[1], free)  # the engine's first run allocates what later runs reuse
    # A schema not seen before is compiled before its first token; the next prompt finds it compiled.
    # (Two prompts, so that llama.cpp's kept prefix of the last prompt helps neither.)
    fresh = JsonSchema({**SCHEMA, "description": "not seen before"})
    cold = _answer(backend, PROMPTS[2], GenerationParams(max_tokens=8, temperature=0.0, constraint=fresh))
    warm = _answer(backend, PROMPTS[3], GenerationParams(max_tokens=8, temperature=0.0, constraint=fresh))
    other = JsonSchema({**SCHEMA, "description": "another one"})  # a new schema once the engine has compiled one
    second = _answer(backend, PROMPTS[2], GenerationParams(max_tokens=8, temperature=0.0, constraint=other))
    runs: dict[str, list[dict[str, float]]] = {"free": [], "json_schema": []}
    for _ in range(rounds):  # each way in turn, so that drift in the machine's speed hits both alike
        for way, params in (("free", free), ("json_schema", constrained)):
            for prompt in PROMPTS:  # never the same prompt twice in a row (llama.cpp keeps the last)
                runs[way].append(_answer(backend, prompt, params))
    summary: dict[str, Any] = {
        way: {
            "decode_tps_median": round(statistics.median(r["decode_tps"] for r in rows), 1),
            "ttft_ms_median": round(statistics.median(r["ttft_ms"] for r in rows), 1),
            "tokens_median": statistics.median(r["tokens"] for r in rows),
        }
        for way, rows in runs.items()
    }
    summary["ratio_decode"] = round(
        summary["json_schema"]["decode_tps_median"] / summary["free"]["decode_tps_median"], 3
    )
    summary["first_token_first_schema_ms"] = round(cold["ttft_ms"], 1)
    summary["first_token_new_schema_ms"] = round(second["ttft_ms"], 1)
    summary["first_token_compiled_schema_ms"] = round(warm["ttft_ms"], 1)
    return summary


def main() -> None:
    args = _parser().parse_args()
    logging.basicConfig(level=logging.WARNING)
    engines = [
        ("llama.cpp (GGUF Q4_1)", lambda: LlamaCppBackend(
            model_path=str(bundled_model_path()), options=LlamaCppOptions(n_threads=args.threads), n_ctx=2048)),
        ("OpenVINO GenAI (IR int4)", lambda: OpenVINOBackend(
            model_path=str(openvino_ir_for_bundled()), options=OpenVINOOptions(kv_cache_reuse=False))),
    ]  # fmt: skip
    results: dict[str, Any] = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "threads": args.threads, "rounds": args.rounds, "max_tokens": args.max_tokens, "schema": SCHEMA,
        "engines": {},
    }  # fmt: skip
    for label, make in engines:
        backend = make()
        backend.load()
        try:
            results["engines"][label] = summary = _measure(backend, args.rounds, args.max_tokens)
        finally:
            backend.close()
        print(
            f"{label}: decode free {summary['free']['decode_tps_median']} tok/s, under the schema "
            f"{summary['json_schema']['decode_tps_median']} tok/s (x{summary['ratio_decode']}); first token free "
            f"{summary['free']['ttft_ms_median']} ms, constrained {summary['json_schema']['ttft_ms_median']} ms; "
            f"first token under the first schema {summary['first_token_first_schema_ms']} ms, a new one "
            f"{summary['first_token_new_schema_ms']} ms, a compiled one {summary['first_token_compiled_schema_ms']} ms"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(results, indent=1) + "\n")
    print(f"saved {out / 'bench.json'}")


if __name__ == "__main__":
    main()
