"""Benchmark: the platform started as deployed (daphne, Redis, one Celery worker process) on the
bundled model, measured by ``manage.py benchmark`` (the same code as the benchmark job) side by
side with llama-cpp-python in process and its own server, in one run. Prints the table; saves
bench.json, bench.csv and the pictures to ``--out``.

    python -m tools.bench_serving --concurrency 1 4 16 --requests 16 --input-tokens 1000 --output-tokens 128
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from tools.benchmarks import bench_platform_start, run_benchmark
from tools.launch import ROOT


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.bench_serving", description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--input-tokens", type=int, default=1000)
    parser.add_argument("--output-tokens", type=int, default=128)
    parser.add_argument(
        "--threads", type=int, default=0, help="llama.cpp threads (default: measured, see llama_runtime)."
    )
    parser.add_argument("--doors", nargs="+", default=["v1", "websocket"])
    parser.add_argument("--vllm-bench", action="store_true")
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/11"))
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", ""))
    parser.add_argument("--out", default=str(ROOT / "docs" / "bench" / "serving"))
    return parser


def bench_serving(opts: dict[str, Any]) -> None:
    data = Path(tempfile.mkdtemp(prefix="chatsite-bench-serving-"))
    plat, token = bench_platform_start(
        data=data, redis_url=opts["redis_url"], database_url=opts["database_url"] or None,
        max_tokens=max(opts["output_tokens"], 512), threads=opts["threads"] or None,
    )  # fmt: skip
    try:
        argv = [
            sys.executable, "manage.py", "benchmark", "--agent", "assistant", "--token", token,
            "--url", plat.http, "--requests", str(opts["requests"]), "--input-tokens", str(opts["input_tokens"]),
            "--output-tokens", str(opts["output_tokens"]), "--out", opts["out"],
            "--concurrency", *map(str, opts["concurrency"]), "--doors", *opts["doors"],
        ]  # fmt: skip
        if opts["vllm_bench"]:
            argv.append("--vllm-bench")
        subprocess.run(argv, cwd=ROOT, env=plat.env, check=True)
    finally:
        plat.stop_all()


def main(argv: list[str] | None = None) -> None:
    run_benchmark(_parser(), bench_serving, argv)


if __name__ == "__main__":
    main()
