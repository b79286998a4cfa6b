"""Benchmark: the same prompts through the raw engine and through the whole platform, in one run.

Raw: llama-cpp-python on the bundled GGUF, in this process, through the backend class the
workers use. Platform: a websocket client → daphne → Redis → a Celery worker process → the same
engine, started here as deployed. Each prompt goes to one side and then the other (the order
alternating), never to both at once, with the same threads on both. Prints decode tokens/s, TTFT,
their ratio and difference, the worker's resident memory, and saves JSON.

    python -m tools.bench_reply --runs 5 --max-tokens 256
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from inference.backends.base import GenerationParams
from inference.backends.llama_cpp import LlamaCppBackend, LlamaCppOptions
from inference.bundled import bundled_model_path
from tools.benchmarks import (
    DEFAULT_THREADS,
    PROMPTS,
    REPETITION_PENALTY,
    SYSTEM,
    bench_platform_start,
    children,
    compare,
    result_record,
    rss_mb,
    run_benchmark,
)
from tools.launch import ROOT, Platform


def _timing(start: float, first: float | None, last: float | None, tokens: int, text: str) -> dict[str, Any]:
    if first is None or last is None:
        raise SystemExit("no text came back")
    return {
        "ttft_ms": (first - start) * 1000,
        "tokens": tokens,
        "decode_tps": (tokens - 1) / max(last - first, 1e-9),
        "text": text,
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench_reply",
        description="Compare reply speed through the platform with the raw llama.cpp engine (prints, saves JSON).",
    )
    parser.add_argument("--runs", type=int, default=5, help="Prompts per side (after one warm-up).")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12"))
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", ""))
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="llama.cpp threads, both sides.")
    parser.add_argument("--out", default=str(ROOT / "docs" / "bench" / "bench_reply.json"))
    return parser


def bench_reply(opts: dict[str, Any]) -> None:
    import redis

    runs, max_tokens, threads = opts["runs"], opts["max_tokens"], opts["threads"]
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(runs)]
    print(f"{bundled_model_path().name}; {runs} prompts, max_tokens={max_tokens}, threads={threads}")
    load_before = os.getloadavg()
    data = Path(tempfile.mkdtemp(prefix="chatsite-bench-reply-"))
    plat, token = bench_platform_start(
        data=data,
        redis_url=opts["redis_url"],
        database_url=opts["database_url"] or None,
        max_tokens=max_tokens,
        threads=threads,
    )
    backend = LlamaCppBackend(
        model_path=str(bundled_model_path()),
        options=LlamaCppOptions.model_validate({"n_threads": threads}),
        n_ctx=2048,
    )
    backend.load()
    params = GenerationParams(max_tokens=max_tokens, temperature=0.0, top_p=1.0, repetition_penalty=REPETITION_PENALTY)
    raw: list[dict[str, Any]] = []
    platform: list[dict[str, Any]] = []
    try:
        _raw(backend, params, "Say hi.")
        _platform(plat, token, "Say hi.")  # the worker loads the model on its first reply
        for i, prompt in enumerate(prompts, start=1):
            sides = [("raw", raw), ("platform", platform)]
            for name, results in sides if i % 2 else reversed(sides):
                r = _raw(backend, params, prompt) if name == "raw" else _platform(plat, token, prompt)
                results.append(r)
                line = f"{r['tokens']:4} tokens {r['decode_tps']:7.1f} tok/s  TTFT {r['ttft_ms']:7.1f} ms"
                print(f"  #{i} {name:9}{line}")
        worker = plat.procs["worker"].pid
        memory = {
            "worker_main_rss_mb": round(rss_mb(worker), 1),
            "worker_child_rss_mb": round(sum(rss_mb(c) for c in children(worker)), 1),
        }
        memory["worker_total_rss_mb"] = round(memory["worker_main_rss_mb"] + memory["worker_child_rss_mb"], 1)
    finally:
        backend.close()
        plat.stop_all()
        redis.Redis.from_url(opts["redis_url"]).flushdb()
    result = _report(raw, platform, memory)
    result.update(runs=runs, max_tokens=max_tokens, threads=threads)
    result["machine"]["loadavg_before"] = [round(x, 2) for x in load_before]
    result["machine"]["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    out = Path(opts["out"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"load average before/after: {load_before[0]:.2f} / {os.getloadavg()[0]:.2f}")
    print(f"saved {out}")


def _raw(backend: LlamaCppBackend, params: GenerationParams, prompt: str) -> dict[str, Any]:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]
    start = time.perf_counter()
    first = last = None
    tokens, pieces = 0, []
    for chunk in backend.stream_chat(messages, params):
        if chunk.text:
            last = time.perf_counter()
            first = first or last
            pieces.append(chunk.text)
        if chunk.usage:
            tokens = chunk.usage.completion_tokens
    return _timing(start, first, last, tokens, "".join(pieces))


def _platform(plat: Platform, token: str, prompt: str) -> dict[str, Any]:
    """One reply in a fresh session, timed as a websocket client sees it."""
    from websockets.sync.client import connect

    headers = {"Authorization": f"Token {token}"}
    request = urllib.request.Request(
        f"{plat.http}/api/sessions/",
        data=b"{}",
        method="POST",
        headers={**headers, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        session_id = json.loads(response.read())["id"]
    with connect(f"{plat.ws}/ws/sessions/{session_id}/", additional_headers=headers) as ws:
        json.loads(ws.recv(timeout=30))
        start = time.perf_counter()
        ws.send(json.dumps({"type": "message", "content": prompt, "client_id": str(uuid.uuid4())}))
        first = last = None
        pieces: list[str] = []
        while True:
            event = json.loads(ws.recv(timeout=600))
            if event["type"] == "delta":
                last = time.perf_counter()
                first = first or last
                pieces.append(event["text"])
            elif event["type"] == "done":
                break
    return _timing(start, first, last, event["stats"]["completion_tokens"] or 0, "".join(pieces))


def _report(raw: list[dict[str, Any]], plat: list[dict[str, Any]], memory: dict[str, float]) -> dict[str, Any]:
    c = compare(raw, plat, "decode_tps")
    raw_tps, plat_tps, pair_ratio = c["raw_tps"], c["platform_tps"], c["ratio_paired"]
    raw_ttft, plat_ttft, pair_added = c["raw_ttft"], c["platform_ttft"], c["added_paired"]
    same, pairs = int(c["same_text"]), raw
    summary = {
        "raw_decode_tps_p50": round(raw_tps, 1),
        "platform_decode_tps_p50": round(plat_tps, 1),
        "decode_ratio": round(plat_tps / raw_tps, 3),
        "decode_ratio_paired_p50": round(pair_ratio, 3),
        "decode_ratio_target": 0.95,
        "raw_ttft_ms_p50": round(raw_ttft, 1),
        "platform_ttft_ms_p50": round(plat_ttft, 1),
        "ttft_added_ms_p50": round(plat_ttft - raw_ttft, 1),
        "ttft_added_ms_paired_p50": round(pair_added, 1),
        "ttft_added_ms_target": 30,
        "same_text": f"{same}/{len(pairs)}",
        **memory,
        "worker_rss_target_mb": 600,
    }
    print()
    print(f"{'':28}{'raw engine':>12}{'platform':>12}{'ratio / added':>16}{'paired':>10}")
    print(f"{'decode tokens/s (p50)':28}{raw_tps:12.1f}{plat_tps:12.1f}{plat_tps / raw_tps:16.3f}{pair_ratio:10.3f}")
    print(f"{'TTFT ms (p50)':28}{raw_ttft:12.1f}{plat_ttft:12.1f}{plat_ttft - raw_ttft:+16.1f}{pair_added:+10.1f}")
    for key, value in memory.items():
        print(f"{key:28}{value:12.1f} MB")
    print(f"same greedy text on both sides: {same}/{len(pairs)}")
    return result_record(
        summary=summary,
        raw=raw,
        plat=plat,
    )


def main(argv: list[str] | None = None) -> None:
    run_benchmark(_parser(), bench_reply, argv)


if __name__ == "__main__":
    main()
