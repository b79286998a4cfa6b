"""A benchmark's files: ``bench.json`` (everything), ``bench.csv`` (one row per target and
concurrency), ``throughput.png`` (output tokens/s against concurrency, one line per target) and
``ttft.png`` (each target's TTFT distribution at the lowest concurrency)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

CSV_FIELDS = (
    "target", "label", "concurrency", "requests", "completed", "failed", "duration_s", "request_throughput",
    "output_tps", "total_tps", "input_tokens_mean", "output_tokens_mean", "ttft_ms.mean", "ttft_ms.p50",
    "ttft_ms.p90", "ttft_ms.p99", "itl_ms.mean", "itl_ms.p50", "itl_ms.p90", "itl_ms.p99", "tpot_ms.p50",
    "e2e_ms.p50", "e2e_ms.p99", "prefill_tps_p50", "decode_tps_p50", "e2e_tps_p50",
)  # fmt: skip


def _field(run: dict[str, Any], name: str) -> Any:
    if "." in name:
        group, key = name.split(".", 1)
        return (run.get(group) or {}).get(key)
    return run.get(name)


def csv_write(result: dict[str, Any], path: Path) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(CSV_FIELDS)
        for run in result["runs"]:
            writer.writerow(["" if (v := _field(run, name)) is None else v for name in CSV_FIELDS])


def pictures_draw(result: dict[str, Any], folder: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    runs = [r for r in result["runs"] if r["completed"]]
    labels = list(dict.fromkeys(r["label"] for r in runs))
    title = f"{result['model'].get('name', '?')} · {result['params']['input_tokens']} in / " \
            f"{result['params']['output_tokens']} out · {result['machine'].get('cpu', '')}"  # fmt: skip
    if runs:
        fig, ax = plt.subplots(figsize=(7.5, 4.2), dpi=110)
        for label in labels:
            points = sorted((r["concurrency"], r["output_tps"]) for r in runs if r["label"] == label)
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
        ax.set_xscale("log", base=2)
        levels = sorted({r["concurrency"] for r in runs})
        ax.set_xticks(levels, [str(c) for c in levels])
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel("output tokens/s")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(folder / "throughput.png")
        plt.close(fig)
        made.append("throughput.png")
        lowest = min(levels)
        series = [(r["label"], r["ttft_ms_all"]) for r in runs if r["concurrency"] == lowest and r["ttft_ms_all"]]
        if series:
            fig, ax = plt.subplots(figsize=(7.5, 4.2), dpi=110)
            ax.boxplot([s[1] for s in series], orientation="horizontal", showmeans=True)
            ax.set_yticks(range(1, len(series) + 1), [s[0] for s in series], fontsize=8)
            ax.set_xlabel(f"time to first token, ms ({lowest} client{'s' if lowest > 1 else ''})")
            ax.set_title(title, fontsize=9)
            ax.grid(alpha=0.3, axis="x")
            fig.tight_layout()
            fig.savefig(folder / "ttft.png")
            plt.close(fig)
            made.append("ttft.png")
    return made


def report_write(result: dict[str, Any], folder: Path) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
    csv_write(result, folder / "bench.csv")
    return ["bench.json", "bench.csv", *pictures_draw(result, folder)]


def report_print(result: dict[str, Any], out: Any = print) -> None:
    """The table a person reads in a terminal or a job's log."""
    m = result["machine"]
    out(
        f"machine: {m.get('cpu')} · {m.get('cores')} cores · {' '.join(m.get('isa') or [])} · "
        f"memory {m.get('memory_gib')} GiB at {m.get('memory_bandwidth_gbs')} GB/s · "
        f"llama.cpp kernels {m.get('llama_cpu_variant')}"
    )
    out(f"{'target':30}{'conc':>5}{'ok':>6}{'req/s':>8}{'out tok/s':>10}{'TTFT p50':>10}{'p99':>8}"
        f"{'ITL p50':>9}{'p99':>8}{'e2e p50':>9}{'prefill':>9}{'decode':>8}")  # fmt: skip

    def num(value: Any, digits: int = 1) -> str:
        return "–" if value is None else f"{value:.{digits}f}"

    for r in result["runs"]:
        out(
            f"{r['label'][:29]:30}{r['concurrency']:>5}{r['completed']:>3}/{r['requests']:<2}"
            f"{num(r['request_throughput'], 2):>8}{num(r['output_tps']):>10}{num(r['ttft_ms']['p50']):>10}"
            f"{num(r['ttft_ms']['p99']):>8}{num(r['itl_ms']['p50']):>9}{num(r['itl_ms']['p99']):>8}"
            f"{num(r['e2e_ms']['p50'], 0):>9}{num(r['prefill_tps_p50'], 0):>9}{num(r['decode_tps_p50']):>8}"
        )
        for error in r["errors"]:
            out(f"    error: {error}")
    for c in result["comparisons"]:
        marks = ", ".join(
            f"{name} {c[name]} ({'met' if ok else 'missed' if ok is not None else '?'} {c['targets'][name]})"
            for name, ok in c["met"].items()
        )
        out(
            f"{c['door']} vs {c['raw']} at {c['concurrency']}: TTFT {_signed(c['ttft_added_ms_p50'])} ms, decode ×"
            f"{c['decode_ratio']}, end-to-end ×{c['e2e_tps_ratio']}, output tok/s ×{c['output_tps_ratio']}"
            + (f" — {marks}" if marks else "")
        )
    for ext in result.get("external", []):
        out(f"{ext['tool']}: {json.dumps(ext.get('result'))[:300]}")


def _signed(value: float | None) -> str:
    return "–" if value is None else f"{value:+.1f}"
