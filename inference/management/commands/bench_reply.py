"""Benchmark: the same prompts through the raw engine and through the whole platform, in one run.

Raw: llama-cpp-python on the bundled GGUF, in this process. Platform: a websocket client →
daphne → Redis → a Celery worker process → the same engine. Prints the ratios and saves JSON.

    manage.py bench_reply --runs 5 --max-tokens 256
"""

from __future__ import annotations

import json
import os
import platform as pyplatform
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from chatsite.launch import ROOT, Platform, free_port, platform_env, prepare
from inference.backends.base import GenerationParams
from inference.backends.llama_cpp import LlamaCppBackend
from inference.backends.options import LlamaCppOptions
from inference.bundled import bundled_model_path

PROMPTS = [
    "Write a long story about a lighthouse keeper who befriends a seagull.",
    "Explain in detail how a steam engine works.",
    "Describe a walk through a busy market in a city by the sea.",
    "Write a long letter from a sailor to his sister about his travels.",
    "Explain why the sky is blue, step by step, for a curious child.",
]
SYSTEM = "You are a helpful assistant. Answer clearly and briefly."


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _p50(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


class Command(BaseCommand):
    help = "Compare reply speed through the platform with the raw llama.cpp engine (prints, saves JSON)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--runs", type=int, default=5, help="Prompts per side (after one warm-up).")
        parser.add_argument("--max-tokens", type=int, default=256)
        parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12"))
        parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", ""))
        parser.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: all cores).")
        parser.add_argument("--out", default=str(ROOT / "docs" / "bench" / "bench_reply.json"))

    def handle(self, *args: Any, **opts: Any) -> None:
        runs, max_tokens = opts["runs"], opts["max_tokens"]
        prompts = [PROMPTS[i % len(PROMPTS)] for i in range(runs)]
        self.stdout.write(f"bundled model: {bundled_model_path().name}; {runs} prompts, max_tokens={max_tokens}")
        raw = self._raw(prompts, max_tokens, opts["threads"])
        plat, memory = self._platform(prompts, max_tokens, opts)
        result = self._report(raw, plat, memory, runs, max_tokens)
        out = Path(opts["out"])
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        self.stdout.write(f"saved {out}")

    # --- raw engine --------------------------------------------------------------------------

    def _raw(self, prompts: list[str], max_tokens: int, threads: int | None) -> list[dict[str, float]]:
        backend = LlamaCppBackend(
            model_path=str(bundled_model_path()),
            options=LlamaCppOptions.model_validate({"n_threads": threads}),
            n_ctx=2048,
        )
        backend.load()
        params = GenerationParams(max_tokens=max_tokens, temperature=0.0, top_p=1.0, repetition_penalty=1.1)
        results = []
        for i, prompt in enumerate(["Say hi.", *prompts]):
            messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]
            start = time.perf_counter()
            first = last = None
            tokens = 0
            for chunk in backend.stream_chat(messages, params):
                now = time.perf_counter()
                if chunk.text:
                    first = first or now
                    last = now
                if chunk.usage:
                    tokens = chunk.usage.completion_tokens
            if i == 0 or first is None or last is None:
                continue  # warm-up
            results.append(
                {
                    "ttft_ms": (first - start) * 1000,
                    "tokens": tokens,
                    "decode_tps": (tokens - 1) / max(last - first, 1e-9),
                }
            )
            self.stdout.write(
                f"  raw      #{i}: {results[-1]['decode_tps']:.1f} tok/s, TTFT {results[-1]['ttft_ms']:.1f} ms"
            )
        backend.close()
        return results

    # --- through the platform ----------------------------------------------------------------

    def _platform(
        self, prompts: list[str], max_tokens: int, opts: dict[str, Any]
    ) -> tuple[list[dict[str, float]], dict[str, float]]:
        import redis
        from websockets.sync.client import connect

        redis.Redis.from_url(opts["redis_url"]).flushdb()
        data = Path(tempfile.mkdtemp(prefix="chatsite-bench-"))
        database_url = opts["database_url"] or f"sqlite:///{data}/bench.sqlite3"
        env = platform_env(data_dir=data, database_url=database_url, redis_url=opts["redis_url"])
        (data / "logs").mkdir()
        plat = Platform(env=env, port=free_port(), log_dir=data / "logs")
        tokens = prepare(env, ("bench",))
        threads = {"n_threads": opts["threads"]} if opts["threads"] else {}
        from chatsite.launch import manage

        manage(
            env, "shell", "-c",
            "from agents.models import Agent\n"
            f"Agent.objects.filter(slug='assistant').update(temperature=0.0, top_p=1.0, repetition_penalty=1.1, "
            f"max_tokens={max_tokens}, system_prompt={SYSTEM!r}, backend_options={threads!r})\n",
        )  # fmt: skip
        results: list[dict[str, float]] = []
        memory: dict[str, float] = {}
        try:
            plat.start_daphne()
            plat.start_worker()
            headers = {"Authorization": f"Token {tokens['bench']}"}
            for i, prompt in enumerate(["Say hi.", *prompts]):
                # A fresh session per prompt, so both sides see the same one-turn prompt.
                import urllib.request

                req = urllib.request.Request(
                    f"{plat.http}/api/sessions/", data=b"{}", method="POST",
                    headers={**headers, "Content-Type": "application/json"},
                )  # fmt: skip
                with urllib.request.urlopen(req) as resp:
                    sid = json.loads(resp.read())["id"]
                with connect(f"{plat.ws}/ws/sessions/{sid}/", additional_headers=headers) as ws:
                    json.loads(ws.recv(timeout=30))
                    start = time.perf_counter()
                    ws.send(json.dumps({"type": "message", "content": prompt, "client_id": str(uuid.uuid4())}))
                    first = last = None
                    done: dict[str, Any] = {}
                    while True:
                        event = json.loads(ws.recv(timeout=300))
                        now = time.perf_counter()
                        if event["type"] == "delta":
                            first = first or now
                            last = now
                        elif event["type"] == "done":
                            done = event
                            break
                if i == 0 or first is None or last is None:
                    continue
                n = done["stats"]["completion_tokens"] or 0
                results.append(
                    {"ttft_ms": (first - start) * 1000, "tokens": n, "decode_tps": (n - 1) / max(last - first, 1e-9)}
                )
                self.stdout.write(
                    f"  platform #{i}: {results[-1]['decode_tps']:.1f} tok/s, TTFT {results[-1]['ttft_ms']:.1f} ms"
                )
            worker = plat.procs["worker"].pid
            children = _children(worker)
            memory = {
                "worker_main_rss_mb": round(_rss_mb(worker), 1),
                "worker_child_rss_mb": round(sum(_rss_mb(c) for c in children), 1),
            }
            memory["worker_total_rss_mb"] = round(memory["worker_main_rss_mb"] + memory["worker_child_rss_mb"], 1)
        finally:
            plat.stop_all()
        return results, memory

    def _report(
        self,
        raw: list[dict[str, float]],
        plat: list[dict[str, float]],
        memory: dict[str, float],
        runs: int,
        max_tokens: int,
    ) -> dict[str, Any]:
        raw_tps, plat_tps = _p50([r["decode_tps"] for r in raw]), _p50([r["decode_tps"] for r in plat])
        raw_ttft, plat_ttft = _p50([r["ttft_ms"] for r in raw]), _p50([r["ttft_ms"] for r in plat])
        summary = {
            "raw_decode_tps_p50": round(raw_tps, 1),
            "platform_decode_tps_p50": round(plat_tps, 1),
            "decode_ratio": round(plat_tps / raw_tps, 3),
            "raw_ttft_ms_p50": round(raw_ttft, 1),
            "platform_ttft_ms_p50": round(plat_ttft, 1),
            "ttft_added_ms_p50": round(plat_ttft - raw_ttft, 1),
            **memory,
        }
        self.stdout.write("")
        self.stdout.write(f"{'':28}{'raw engine':>14}{'platform':>14}{'ratio / added':>16}")
        self.stdout.write(f"{'decode tokens/s (p50)':28}{raw_tps:14.1f}{plat_tps:14.1f}{plat_tps / raw_tps:16.3f}")
        self.stdout.write(f"{'TTFT ms (p50)':28}{raw_ttft:14.1f}{plat_ttft:14.1f}{plat_ttft - raw_ttft:+16.1f}")
        for key, value in memory.items():
            self.stdout.write(f"{key:28}{value:14.1f} MB")
        return {
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {"cpus": os.cpu_count(), "python": pyplatform.python_version()},
            "runs": runs,
            "max_tokens": max_tokens,
            "summary": summary,
            "raw": raw,
            "platform": plat,
        }
