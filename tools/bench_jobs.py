"""Every job kind on the bundled model, as an operator runs them, with its time and peak memory,
then the evaluation of every artifact they made: one table, saved as JSON and drawn as a picture.

    python -m tools.bench_jobs [--out docs/bench/bench_jobs.json] [--picture docs/jobs.png]

It runs the embedded default in this process (SQLite in a temporary folder, jobs in the
in-process job thread, steps in child processes as on a worker) and starts each job through the
same service the REST API calls. Times are wall-clock seconds of each job (claim to end); peak
memory is the largest resident set of the job's step processes (``wait4``'s ``ru_maxrss``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _setup(data_dir: Path) -> None:
    os.environ.pop("REDIS_URL", None)
    os.environ.pop("DATABASE_URL", None)
    os.environ["CHATSITE_DATA_DIR"] = str(data_dir)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
    sys.path.insert(0, str(ROOT))
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", "--noinput", verbosity=0)
    call_command("bootstrap", verbosity=0)


def run(kind: str, **params: Any) -> Any:
    from inference.models import Job
    from pipeline.jobs import services

    job = services.job_create(kind=kind, params=params)
    while True:
        job.refresh_from_db()
        if job.is_finished:
            break
        time.sleep(0.5)
    line = f"{kind:16} {json.dumps({k: v for k, v in params.items() if k != 'source'}):60} {job.status:10}"
    print(f"{line} {job.duration_seconds() or 0:7.1f} s  peak {(job.peak_rss_bytes or 0) / 2**20:7.0f} MiB", flush=True)
    if job.status != Job.Status.SUCCEEDED:
        raise SystemExit(f"job {job.pk} {job.status}: {job.error}\n{job.log[-3000:]}")
    return job


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "bench" / "bench_jobs.json"))
    parser.add_argument("--picture", default=str(ROOT / "docs" / "jobs.png"))
    parser.add_argument("--skip-gptq", action="store_true", help="when .venv-gptq is not built")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-jobs-") as tmp:
        _setup(Path(tmp))
        from inference.models import ModelArtifact

        bundled = ModelArtifact.objects.get(parent=None, format="gguf")
        jobs = []
        hf = run("convert", source=bundled.pk, to="hf")
        jobs.append(hf)
        hf_a = hf.artifacts.get()
        plan: list[tuple[str, dict[str, Any]]] = [
            ("export_openvino", {"weight_format": "int4", "group_size": 64}),
            ("export_openvino", {"weight_format": "int8"}),
            ("quantize_rtn", {"bits": 8}),
            ("quantize_rtn", {"bits": 4}),
            *([] if args.skip_gptq else [("gptq", {"bits": 4, "group_size": 64, "samples": 64, "max_length": 256})]),
        ]
        for kind, params in plan:
            jobs.append(run(kind, source=hf_a.pk, **params))
        f16 = run("convert", source=hf_a.pk, to="gguf", outtype="f16")
        jobs.append(f16)
        for qtype in ("Q4_K_M", "Q8_0"):
            jobs.append(run("quantize_gguf", source=f16.artifacts.get().pk, type=qtype))
        evaluated = [bundled, *ModelArtifact.objects.exclude(pk=bundled.pk).order_by("pk")]
        evaluations = []
        for art in evaluated:
            jobs.append(run("evaluate", source=art.pk))
            e = art.evaluations.get()
            evaluations.append({
                "artifact": art.name, "format": art.format, "quantization": art.quantization,
                "size_mib": round((e.size_bytes or 0) / 2**20, 1), "perplexity": round(e.perplexity or 0, 3),
                "ppl_tokens": e.ppl_tokens, "decode_tokens_per_s": round(e.decode_tokens_per_s or 0, 1),
                "prefill_tokens_per_s": round(e.prefill_tokens_per_s or 0, 1), "sample": e.sample,
            })  # fmt: skip
        record = {
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
            "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "jobs": [
                {
                    "kind": j.kind,
                    "params": {k: v for k, v in j.params.items() if k != "source"},
                    "seconds": round(j.duration_seconds() or 0, 1),
                    "peak_rss_mib": round((j.peak_rss_bytes or 0) / 2**20),
                }
                for j in jobs
            ],  # fmt: skip
            "evaluations": evaluations,
        }
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print("\n| artifact | format | quantization | size MiB | perplexity | decode tok/s | prefill tok/s |")
    for row in evaluations:
        cells = ["artifact", "format", "quantization", "size_mib", "perplexity", "decode_tokens_per_s",
                 "prefill_tokens_per_s"]  # fmt: skip
        print("| " + " | ".join(str(row[c]) for c in cells) + " |")
    draw(record, Path(args.picture))
    print(f"saved {args.out} and {args.picture}")


def draw(record: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = record["evaluations"]
    labels = [f"{r['format']} {r['quantization']}" for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(15, 0.5 * len(rows) + 1.8), sharey=True)
    for ax, key, title in zip(
        axes, ["size_mib", "perplexity", "decode_tokens_per_s"],
        ["size on disk (MiB)", "perplexity on held-out text (lower is better)", "decode tokens/s (2 cores)"],
        strict=True,
    ):  # fmt: skip
        values = [r[key] for r in rows]
        bars = ax.barh(labels, values, color="#4f7cac")
        ax.set_title(title, fontsize=10)
        ax.bar_label(bars, fmt="%.1f", fontsize=8, padding=2)
        ax.margins(x=0.2)
    axes[0].invert_yaxis()
    fig.suptitle("Artifacts made from the bundled SmolLM2-135M-Instruct by the pipeline jobs", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
