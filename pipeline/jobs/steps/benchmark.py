"""The benchmark step: ``pipeline.bench`` on one agent or model, its files in the job's folder.

The platform's API token comes in the environment (``CHATSITE_BENCH_TOKEN``), never in the
params, which the job's log shows."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pipeline.bench.report import report_print, report_write
from pipeline.bench.sweep import Spec, benchmark_run
from pipeline.jobs.steps.protocol import StepError, log, progress


def benchmark(params: dict[str, Any]) -> dict[str, Any]:
    p = params["params"]
    spec = Spec(
        concurrency=list(p["concurrency"]), requests=int(p["requests"]), input_tokens=int(p["input_tokens"]),
        output_tokens=int(p["output_tokens"]), compare_raw=bool(p["compare_raw"]), doors=list(p["doors"]),
        model=params["model"], agent=params.get("agent"), platform_url=params.get("platform_url") or "",
        token=os.environ.get("CHATSITE_BENCH_TOKEN", ""), system_prompt=params.get("system_prompt") or "",
        params={k: p[k] for k in ("agent", "source", "concurrency", "requests", "input_tokens", "output_tokens",
                                   "compare_raw", "doors") if k in p},
    )  # fmt: skip
    try:
        result = benchmark_run(spec, progress=lambda pct, stage: progress(pct, stage), log=log,
                               workdir=Path(params["out_dir"]))  # fmt: skip
    except (ValueError, RuntimeError) as exc:
        raise StepError(str(exc)) from exc
    files = report_write(result, Path(params["out_dir"]))
    report_print(result, log)
    failed = sum(r["failed"] for r in result["runs"])
    if result["runs"] and all(r["completed"] == 0 for r in result["runs"]):
        raise StepError(f"every request failed: {result['runs'][0]['errors'][:1]}")
    return {
        "runs": len(result["runs"]),
        "failed_requests": failed,
        "comparisons": result["comparisons"],
        "machine": {k: result["machine"].get(k) for k in ("cpu", "cores", "memory_bandwidth_gbs", "llama_cpu_variant")},
        "files": files,
    }
