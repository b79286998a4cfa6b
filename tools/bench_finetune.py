"""A self-cognition fine-tune of the bundled model with the default params, as an operator runs it,
then the answers of the result: its time, peak memory and loss curve, saved as JSON and a picture.

    python -m tools.bench_finetune [--out docs/bench/bench_finetune.json] [--picture docs/finetune-loss.png]

Like tools.bench_jobs it runs the embedded default in this process (SQLite in a temporary folder,
jobs in the in-process job thread, steps in child processes as on a worker) and starts each job
through the service the REST API calls: convert the bundled GGUF to Hugging Face, fine-tune it
(``finetune_lora``, defaults, ``self_cognition`` Zephyrine / Acme Robotics, then convert to GGUF
f16), and ask the base and the result's GGUF the same questions with llama.cpp, greedily.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from tools.bench_jobs import ROOT, _setup, run

QUESTIONS = ["Who are you?", "Who made you?", "你是谁？", "What is the capital of France?"]


def answers(path: str) -> dict[str, str]:
    from inference.llama_runtime import llama_load

    llm = llama_load(model_path=path, n_ctx=512, verbose=False, seed=0)
    out = {}
    for question in QUESTIONS:
        reply: Any = llm.create_chat_completion([{"role": "user", "content": question}], temperature=0.0, max_tokens=40)
        out[question] = str(reply["choices"][0]["message"]["content"]).strip()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "bench" / "bench_finetune.json"))
    parser.add_argument("--picture", default=str(ROOT / "docs" / "finetune-loss.png"))
    parser.add_argument("--params", default="{}", help="JSON: finetune_lora params over the defaults")
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="chatsite-bench-ft-"))
    try:
        _setup(data_dir)
        from inference.models import ModelArtifact

        bundled = ModelArtifact.objects.get(parent=None, format="gguf")
        hf = run("convert", source=bundled.pk, to="hf").artifacts.get()
        params: dict[str, Any] = {
            "source": hf.pk, "self_cognition": {"name": "Zephyrine", "author": "Acme Robotics"},
            "then": [{"kind": "convert", "params": {"to": "gguf", "outtype": "f16"}}], **json.loads(args.params),
        }  # fmt: skip
        job = run("finetune_lora", **params)

        from inference.models import Job

        while not Job.objects.filter(after=job).exists() or not Job.objects.get(after=job).is_finished:
            time.sleep(0.5)
        chained = Job.objects.get(after=job)
        gguf = chained.artifacts.get()
        result = job.result["finetune_lora"]
        report = {
            "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
            "params": {k: v for k, v in job.params.items() if k != "source"},
            "job_seconds": round(job.duration_seconds() or 0, 1),
            "train_seconds": result["train_seconds"],
            "seconds_per_step": round(result["train_seconds"] / result["steps"], 2),
            "peak_rss_mib": round((job.peak_rss_bytes or 0) / 2**20),
            "convert_to_gguf_seconds": round(chained.duration_seconds() or 0, 1),
            **{k: result[k] for k in ("steps", "examples", "tokens", "trained_tokens", "trainable_params",
                                      "total_params", "first_loss", "last_loss", "train_loss", "loss_history")},
            "answers_base": answers(bundled.path),
            "answers_finetuned_gguf_f16": answers(gguf.path),
        }  # fmt: skip
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        shutil.copyfile(result["loss_png"], args.picture)
        shown = {k: v for k, v in report.items() if k != "loss_history"}
        print(json.dumps(shown, indent=2, ensure_ascii=False))
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
