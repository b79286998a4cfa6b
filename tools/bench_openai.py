"""Benchmark: the same chats streamed through the platform's ``/v1/chat/completions`` and through
llama-cpp-python's own OpenAI server on the same GGUF, with the official ``openai`` client on
both sides, in one run.

Raw: ``python -m llama_cpp.server`` on the bundled model. Platform: daphne → Redis → a Celery
worker process → llama.cpp, started here as in production. Both are started first; then each
prompt goes to one side and then to the other (the order alternating), never to both at once:
the two engines would fight for the cores, and pairing the requests keeps a busy neighbour on
the machine from favouring either side. Prints output tokens/s and TTFT for each side, the ratio
and the TTFT added, and saves JSON.

    python -m tools.bench_openai --runs 5 --max-tokens 200
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

from inference.bundled import bundled_model_path
from inference.children import free_port, group_stop, spawn
from tools.benchmarks import (
    DEFAULT_THREADS,
    PROMPTS,
    REPETITION_PENALTY,
    SYSTEM,
    bench_platform_start,
    compare,
    p50,
    result_record,
    run_benchmark,
)
from tools.launch import ROOT, Platform, wait_for_port


def _stream(client: Any, model: str, prompt: str, max_tokens: int, extra: dict[str, Any]) -> dict[str, Any]:
    """One streamed chat, timed as its caller sees it."""
    start = time.perf_counter()
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}],
        temperature=0.0, top_p=1.0, max_tokens=max_tokens, stream=True, extra_body=extra,
    )  # fmt: skip
    first = last = None
    pieces: list[str] = []
    finish, usage_tokens, completion_id = None, None, ""
    for chunk in stream:
        now = time.perf_counter()
        completion_id = chunk.id
        if chunk.choices:
            content = chunk.choices[0].delta.content
            if content:
                first = first or now
                last = now
                pieces.append(content)
            finish = chunk.choices[0].finish_reason or finish
        if getattr(chunk, "usage", None):
            usage_tokens = chunk.usage.completion_tokens
    end = time.perf_counter()
    if first is None or last is None:
        raise SystemExit(f"{model}: no text came back for {prompt!r}")
    # llama.cpp's server sends no usage when streaming; it sends one chunk per token.
    tokens = usage_tokens if usage_tokens is not None else (max_tokens if finish == "length" else len(pieces))
    return {
        "ttft_ms": (first - start) * 1000,
        "tokens": tokens,
        "output_tps": (tokens - 1) / max(last - first, 1e-9),
        "end_to_end_tps": tokens / (end - start),
        "text": "".join(pieces),
        "id": completion_id,
    }


def _server_side(base: str, token: str, result: dict[str, Any]) -> dict[str, float]:
    """Where the platform's TTFT went, from the stored reply: from the reply row's creation to a
    worker claiming it (commit, Celery, claim), and from the claim to the first token."""

    def get(path: str) -> Any:
        request = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    reply_id = int(result["id"].removeprefix("chatcmpl-"))
    session_id = get("/api/sessions/")["results"][0]["id"]
    message = get(f"/api/sessions/{session_id}/messages/{reply_id}/")
    created, started = (datetime.fromisoformat(message[k]) for k in ("created_at", "started_at"))
    return {"queue_ms": (started - created).total_seconds() * 1000, "worker_ttft_ms": message["stats"]["ttft_ms"]}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench_openai",
        description="Compare /v1/chat/completions with llama-cpp-python's own OpenAI server (prints, saves JSON).",
    )
    parser.add_argument("--runs", type=int, default=5, help="Prompts per side (after one warm-up).")
    parser.add_argument("--max-tokens", type=int, default=200)
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/11"))
    parser.add_argument(
        "--database-url", default=os.environ.get("BENCH_DATABASE_URL", ""),
        help="Default: the platform's own SQLite set-up in a fresh folder.",
    )  # fmt: skip
    parser.add_argument(
        "--threads", type=int, default=DEFAULT_THREADS,
        help="llama.cpp threads on both sides (default: half the cores, llama.cpp's own default).",
    )  # fmt: skip
    parser.add_argument("--out", default=str(ROOT / "docs" / "bench" / "bench_openai.json"))
    return parser


def bench_openai(opts: dict[str, Any]) -> None:
    import redis
    from openai import OpenAI

    for name in ("httpx", "httpx2"):
        logging.getLogger(name).setLevel(logging.WARNING)  # one line per request otherwise
    runs, max_tokens, threads = opts["runs"], opts["max_tokens"], opts["threads"]
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(runs)]
    data = Path(tempfile.mkdtemp(prefix="chatsite-bench-openai-"))
    (data / "logs").mkdir()
    print(f"bundled model: {bundled_model_path().name}; {runs} prompts, max_tokens={max_tokens}, threads={threads}")
    load_before = os.getloadavg()
    server = _start_raw(threads, data)
    plat: Platform | None = None
    try:
        plat, token = _start_platform(max_tokens, threads, data, opts)
        raw_client = OpenAI(base_url=server[1], api_key="unused", max_retries=0, timeout=600)
        raw_model = raw_client.models.list().data[0].id
        plat_client = OpenAI(base_url=f"{plat.http}/v1", api_key=token, max_retries=0, timeout=600)

        def raw_side(prompt: str) -> dict[str, Any]:
            return _stream(raw_client, raw_model, prompt, max_tokens, {"repeat_penalty": REPETITION_PENALTY})

        def plat_side(prompt: str) -> dict[str, Any]:
            extra = {"repetition_penalty": REPETITION_PENALTY, "stream_options": {"include_usage": True}}
            return _stream(plat_client, "assistant", prompt, max_tokens, extra)

        # Warm-up: the platform's worker loads the model on its first reply.
        raw_side("Say hi.")
        plat_side("Say hi.")
        raw, platform = [], []
        for i, prompt in enumerate(prompts, start=1):
            if i % 2:
                raw.append(raw_side(prompt))
                platform.append(plat_side(prompt))
            else:
                platform.append(plat_side(prompt))
                raw.append(raw_side(prompt))
            platform[-1].update(_server_side(plat.http, token, platform[-1]))
            for side, r in (("raw", raw[-1]), ("platform", platform[-1])):
                where = "".join(f", {k} {v:.1f}" for k, v in r.items() if k in ("queue_ms", "worker_ttft_ms"))
                print(
                    f"  #{i} {side:9}{r['tokens']:4} tokens {r['output_tps']:7.1f} tok/s  "
                    f"TTFT {r['ttft_ms']:7.1f} ms{where}"
                )
    finally:
        group_stop(server[0], grace=30)
        if plat is not None:
            plat.stop_all()
        redis.Redis.from_url(opts["redis_url"]).flushdb()
    result = _report(raw, platform, runs, max_tokens, threads)
    result["machine"]["loadavg_before"] = [round(x, 2) for x in load_before]
    result["machine"]["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    out = Path(opts["out"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"load average before/after: {load_before[0]:.2f} / {os.getloadavg()[0]:.2f}")
    print(f"saved {out}")


def _start_raw(threads: int, data: Path) -> tuple[subprocess.Popen[bytes], str]:
    """llama-cpp-python's own OpenAI server on the bundled model."""
    port = free_port()
    argv = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(bundled_model_path()), "--n_ctx", "2048",
        "--n_threads", str(threads), "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    with open(data / "logs" / "llama_cpp_server.log", "ab") as log:
        server = spawn(argv, stdout=log, stderr=subprocess.STDOUT, death_signal=signal.SIGTERM, lasting=True)
    wait_for_port(port, timeout=120)
    return server, f"http://127.0.0.1:{port}/v1"


def _start_platform(max_tokens: int, threads: int, data: Path, opts: dict[str, Any]) -> tuple[Platform, str]:
    return bench_platform_start(
        data=data,
        redis_url=opts["redis_url"],
        database_url=opts["database_url"] or None,
        max_tokens=max_tokens,
        threads=threads,
    )


def _report(
    raw: list[dict[str, Any]], plat: list[dict[str, Any]], runs: int, max_tokens: int, threads: int
) -> dict[str, Any]:
    c = compare(raw, plat, "output_tps")
    raw_tps, plat_tps, pair_ratio = c["raw_tps"], c["platform_tps"], c["ratio_paired"]
    raw_ttft, plat_ttft, pair_added = c["raw_ttft"], c["platform_ttft"], c["added_paired"]
    raw_e2e, plat_e2e = p50([r["end_to_end_tps"] for r in raw]), p50([r["end_to_end_tps"] for r in plat])
    same, pairs = int(c["same_text"]), raw
    summary = {
        "raw_output_tps_p50": round(raw_tps, 1),
        "platform_output_tps_p50": round(plat_tps, 1),
        "output_tps_ratio": round(plat_tps / raw_tps, 3),
        "output_tps_ratio_paired_p50": round(pair_ratio, 3),
        "output_tps_ratio_target": 0.95,
        "raw_end_to_end_tps_p50": round(raw_e2e, 1),
        "platform_end_to_end_tps_p50": round(plat_e2e, 1),
        "raw_ttft_ms_p50": round(raw_ttft, 1),
        "platform_ttft_ms_p50": round(plat_ttft, 1),
        "ttft_added_ms_p50": round(plat_ttft - raw_ttft, 1),
        "ttft_added_ms_paired_p50": round(pair_added, 1),
        "ttft_added_ms_target": 15,
        "platform_queue_ms_p50": round(p50([p["queue_ms"] for p in plat]), 1),
        "platform_worker_ttft_ms_p50": round(p50([p["worker_ttft_ms"] for p in plat]), 1),
        "same_text": f"{same}/{len(pairs)}",
    }
    print()
    print(f"{'':30}{'llama_cpp.server':>18}{'platform /v1':>14}{'ratio / added':>16}{'paired':>10}")
    print(f"{'output tokens/s (p50)':30}{raw_tps:18.1f}{plat_tps:14.1f}{plat_tps / raw_tps:16.3f}{pair_ratio:10.3f}")
    print(f"{'end-to-end tokens/s (p50)':30}{raw_e2e:18.1f}{plat_e2e:14.1f}{plat_e2e / raw_e2e:16.3f}")
    print(f"{'TTFT ms (p50)':30}{raw_ttft:18.1f}{plat_ttft:14.1f}{plat_ttft - raw_ttft:+16.1f}{pair_added:+10.1f}")
    print(
        f"platform TTFT: {summary['platform_queue_ms_p50']} ms to a worker's claim, "
        f"{summary['platform_worker_ttft_ms_p50']} ms from claim to first token (p50)"
    )
    print(f"same greedy text on both sides: {same}/{len(pairs)}")
    return result_record(
        summary=summary,
        raw=raw,
        plat=plat,
        runs=runs,
        max_tokens=max_tokens,
        threads=threads,
    )


def main(argv: list[str] | None = None) -> None:
    run_benchmark(_parser(), bench_openai, argv)


if __name__ == "__main__":
    main()
