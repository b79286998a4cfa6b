"""What the benchmark commands share: the prompts, the statistics, and a platform started as
deployed (daphne, Redis, one Celery worker process) with the bundled agent set for greedy,
comparable output."""

from __future__ import annotations

import argparse
import os
import platform as pyplatform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tools.launch import Platform, free_port, manage, platform_env, prepare

PROMPTS = [
    "Write a long story about a lighthouse keeper who befriends a seagull.",
    "Explain in detail how a steam engine works.",
    "Describe a walk through a busy market in a city by the sea.",
    "Write a long letter from a sailor to his sister about his travels.",
    "Explain why the sky is blue, step by step, for a curious child.",
]
SYSTEM = "You are a helpful assistant. Answer clearly and briefly."
REPETITION_PENALTY = 1.1
DEFAULT_THREADS = max((os.cpu_count() or 2) // 2, 1)  # llama.cpp's own default: half the cores


def p50(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def rss_mb(pid: int) -> float:
    """Resident memory of one process, from /proc."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def bench_platform_start(
    *,
    data: Path,
    redis_url: str,
    database_url: str | None,
    max_tokens: int,
    threads: int | None,
    env_extra: dict[str, str] | None = None,
) -> tuple[Platform, str]:
    """daphne, Redis and one Celery worker process; returns the platform and an API token.

    Without ``database_url`` the platform uses its own SQLite set-up (WAL, a busy timeout).
    """
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    (data / "logs").mkdir(exist_ok=True)
    env = platform_env(data_dir=data, database_url=database_url, redis_url=redis_url, **(env_extra or {}))
    plat = Platform(env=env, port=free_port(), log_dir=data / "logs")
    token = prepare(env, ("bench",))["bench"]
    manage(
        env, "shell", "-c",
        "from agents.models import Agent\n"
        "agent = Agent.objects.get(slug='assistant')\n"
        f"agent.max_tokens = {max_tokens}\n"
        f"agent.temperature, agent.top_p, agent.repetition_penalty = 0.0, 1.0, {REPETITION_PENALTY}\n"
        f"agent.system_prompt = {SYSTEM!r}\n"
        f"agent.backend_options = {({'n_threads': threads} if threads else {})!r}\n"
        "agent.save()\n",
    )  # fmt: skip
    try:
        plat.start_daphne()
        plat.start_worker()
    except BaseException:
        plat.stop_all()
        raise
    return plat, token


def compare(raw: list[dict[str, Any]], plat: list[dict[str, Any]], speed: str) -> dict[str, float]:
    """p50s of both sides for the tokens/s field ``speed`` and for TTFT, their ratio and difference,
    and the same per prompt pair (each prompt ran on both sides back to back)."""
    pairs = list(zip(raw, plat, strict=True))
    raw_tps, plat_tps = p50([r[speed] for r in raw]), p50([p[speed] for p in plat])
    raw_ttft, plat_ttft = p50([r["ttft_ms"] for r in raw]), p50([p["ttft_ms"] for p in plat])
    return {
        "raw_tps": raw_tps,
        "platform_tps": plat_tps,
        "ratio": plat_tps / raw_tps,
        "ratio_paired": p50([p[speed] / r[speed] for r, p in pairs]),
        "raw_ttft": raw_ttft,
        "platform_ttft": plat_ttft,
        "added": plat_ttft - raw_ttft,
        "added_paired": p50([p["ttft_ms"] - r["ttft_ms"] for r, p in pairs]),
        "same_text": sum(r["text"] == p["text"] for r, p in pairs),
    }


def result_record(
    *, summary: dict[str, Any], raw: list[dict[str, Any]], plat: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    """What a benchmark saves: when, on what, its settings, the summary, and every run (without
    the generated text)."""
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": pyplatform.python_version()},
        **extra,
        "summary": summary,
        "raw": [{k: v for k, v in r.items() if k != "text"} for r in raw],
        "platform": [{k: v for k, v in p.items() if k != "text"} for p in plat],
    }


def run_benchmark(
    parser: argparse.ArgumentParser, bench: Callable[[dict[str, Any]], Any], argv: list[str] | None
) -> None:
    """Parse the options first (``--help`` needs no Django), then set Django up and run."""
    opts = vars(parser.parse_args(argv))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
    import django

    django.setup()
    bench(opts)
