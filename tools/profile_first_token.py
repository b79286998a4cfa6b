"""Where the platform's time to first token goes: every hop from the request to the first byte.

Starts the platform as deployed (daphne, Redis, one Celery worker process; SQLite unless
``--database-url``) with ``FIRST_TOKEN_TRACE=1`` (``sessions_app.trace``), streams short chats
through ``/v1`` with the official ``openai`` client, one at a time, and the same chats through
llama-cpp-python's own server on the same model and threads; then reads the hop marks from the
daphne and worker logs and prints the median time between hops, and the TTFT the platform adds.

    python -m tools.profile_first_token --requests 20 --label after
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from inference.bundled import bundled_model_path
from pipeline.bench.raw import llama_server
from tools.benchmarks import bench_platform_start, run_benchmark
from tools.launch import ROOT

HOPS = ("request", "stored", "task", "claimed", "prompt", "engine_first", "sent", "door_event", "first_byte")
MARK = re.compile(r"first-token reply=(\d+) hop=(\w+) t=([\d.]+)")
PROMPTS = ["Say hello.", "Name a colour.", "Count to three.", "What is 2 + 2?", "Name a fruit."]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.profile_first_token", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--threads", type=int, default=0, help="llama.cpp threads (default: measured).")
    parser.add_argument("--label", default="now", help="A name for this run in the saved JSON (before / after).")
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/11"))
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", ""))
    parser.add_argument("--out", default=str(ROOT / "docs" / "bench" / "first_token.json"))
    return parser


def _stream(client: Any, model: str, prompt: str, max_tokens: int, extra: dict[str, Any]) -> tuple[float, str]:
    """TTFT in ms as the caller sees it, and the completion id."""
    start = time.time()
    first = None
    cid = ""
    for chunk in client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens, temperature=0.0,
        stream=True, extra_body=extra,
    ):  # fmt: skip
        cid = chunk.id
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.time()
    return ((first or time.time()) - start) * 1000, cid


def profile(opts: dict[str, Any]) -> None:
    import logging

    from openai import OpenAI

    from inference.llama_runtime import default_threads

    logging.getLogger("httpx").setLevel(logging.WARNING)
    threads = opts["threads"] or default_threads()
    data = Path(tempfile.mkdtemp(prefix="chatsite-profile-"))
    plat, token = bench_platform_start(
        data=data, redis_url=opts["redis_url"], database_url=opts["database_url"] or None, max_tokens=512,
        threads=threads, env_extra={"FIRST_TOKEN_TRACE": "1"},
    )  # fmt: skip
    sent: dict[int, tuple[float, float]] = {}  # reply id -> (client send, client first text)
    raw_ttft: list[float] = []
    plat_ttft: list[float] = []
    try:
        with llama_server(str(bundled_model_path()), n_threads=threads, n_ctx=2048, log=data / "raw.log") as url:
            raw = OpenAI(base_url=url, api_key="unused", max_retries=0)
            client = OpenAI(base_url=f"{plat.http}/v1", api_key=token, max_retries=0)
            _stream(raw, "x", "Hi", 2, {"repeat_penalty": 1.0})
            _stream(client, "assistant", "Hi", 2, {})  # the worker loads the model
            for i in range(opts["requests"]):
                prompt = PROMPTS[i % len(PROMPTS)] + f" (#{i})"
                raw_ttft.append(_stream(raw, "x", prompt, opts["max_tokens"], {"repeat_penalty": 1.0})[0])
                start = time.time()
                ttft, cid = _stream(client, "assistant", prompt, opts["max_tokens"], {"repetition_penalty": 1.0})
                plat_ttft.append(ttft)
                sent[int(cid.removeprefix("chatcmpl-"))] = (start, start + ttft / 1000)
    finally:
        plat.stop_all()
    marks: dict[int, dict[str, float]] = {}
    for log in (data / "logs").glob("*.log"):
        for match in MARK.finditer(log.read_text(errors="replace")):
            marks.setdefault(int(match[1]), {})[match[2]] = float(match[3])
    steps = [("client", "request"), *zip(HOPS, HOPS[1:], strict=False), ("first_byte", "client_first")]
    table: dict[str, float] = {}
    for a, b in steps:
        gaps = []
        for reply_id, (start, first) in sent.items():
            hops = {**marks.get(reply_id, {}), "client": start, "client_first": first}
            if a in hops and b in hops:
                gaps.append((hops[b] - hops[a]) * 1000)
        if gaps:
            table[f"{a} -> {b}"] = round(statistics.median(gaps), 2)
    result = {
        "label": opts["label"], "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "threads": threads,
        "requests": len(sent), "hops_ms_p50": table,
        "raw_ttft_ms_p50": round(statistics.median(raw_ttft), 1),
        "platform_ttft_ms_p50": round(statistics.median(plat_ttft), 1),
        "ttft_added_ms_p50": round(statistics.median(plat_ttft) - statistics.median(raw_ttft), 1),
        "ttft_added_ms_paired_p50": round(statistics.median(p - r for p, r in zip(plat_ttft, raw_ttft, strict=True)),
                                          1),
        "raw_ttft_ms_p99": round(_p99(raw_ttft), 1), "platform_ttft_ms_p99": round(_p99(plat_ttft), 1),
        "ttft_added_ms_p99": round(_p99(plat_ttft) - _p99(raw_ttft), 1),
        "ttft_added_ms_paired_p99": round(_p99([p - r for p, r in zip(plat_ttft, raw_ttft, strict=True)]), 1),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }  # fmt: skip
    for step, ms in table.items():
        print(f"  {step:34} {ms:8.2f} ms")
    for q in ("p50", "p99"):
        print(
            f"TTFT {q}: llama.cpp server {result[f'raw_ttft_ms_{q}']} ms, platform /v1"
            f" {result[f'platform_ttft_ms_{q}']} ms, added {result[f'ttft_added_ms_{q}']} ms"
            f" (paired {result[f'ttft_added_ms_paired_{q}']})"
        )
    out = Path(opts["out"])
    saved = json.loads(out.read_text()) if out.exists() else {}
    saved[opts["label"]] = result
    out.write_text(json.dumps(saved, indent=2) + "\n")
    print(f"saved {out} [{opts['label']}]")


def _p99(values: list[float]) -> float:
    """The 99th percentile (interpolated; with under 100 values, close to the largest)."""
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def main(argv: list[str] | None = None) -> None:
    run_benchmark(_parser(), profile, argv)


if __name__ == "__main__":
    main()
