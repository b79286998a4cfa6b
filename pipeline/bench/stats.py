"""What one request measured, and a run's summary.

Definitions (the seeds'): TTFT is from sending the request to the first text; prefill tokens/s is
prompt tokens / TTFT; decode tokens/s is the tokens after the first / the time after the first
(mnn-llm). Inter-token latency is the gap between successive pieces of text as the client received
them (vLLM's serving benchmark does the same: a door that batches tokens shows long gaps); TPOT is
(end-to-end - TTFT) / (tokens - 1). A run of N concurrent clients reports request throughput,
output and total tokens/s over its wall time, and the mean, p50, p90 and p99 of each latency.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

PERCENTILES = (50, 90, 99)


@dataclass
class RequestResult:
    """One request as its client saw it; times are ``time.perf_counter()`` seconds."""

    start: float
    ok: bool = False
    error: str = ""
    prompt_tokens: int = 0
    output_tokens: int = 0
    first: float | None = None
    end: float = 0.0
    chunks: list[float] = field(default_factory=list)  # arrival of each piece of text
    text: str = ""

    def piece(self, now: float, text: str) -> None:
        if not text:
            return
        if self.first is None:
            self.first = now
        self.chunks.append(now)
        self.text += text

    @property
    def ttft(self) -> float | None:
        return None if self.first is None else self.first - self.start

    @property
    def e2e(self) -> float:
        return self.end - self.start

    @property
    def itls(self) -> list[float]:
        return [b - a for a, b in zip(self.chunks, self.chunks[1:], strict=False)]

    @property
    def decode_tps(self) -> float | None:
        if self.first is None or self.output_tokens < 2 or len(self.chunks) < 2:
            return None
        return (self.output_tokens - 1) / max(self.chunks[-1] - self.first, 1e-9)

    @property
    def prefill_tps(self) -> float | None:
        ttft = self.ttft
        return self.prompt_tokens / ttft if ttft and self.prompt_tokens else None

    @property
    def tpot(self) -> float | None:
        ttft = self.ttft
        if ttft is None or self.output_tokens < 2:
            return None
        return (self.e2e - ttft) / (self.output_tokens - 1)


def distribution(values: list[float], scale: float = 1.0) -> dict[str, float | None]:
    """Mean and percentiles (numpy's linear interpolation, as vLLM reports them)."""
    if not values:
        return {"mean": None, **{f"p{p}": None for p in PERCENTILES}}
    arr = np.asarray(values, dtype=float) * scale
    return {"mean": _r(arr.mean()), **{f"p{p}": _r(np.percentile(arr, p)) for p in PERCENTILES}}


def _r(value: Any, digits: int = 2) -> float | None:
    return None if value is None else round(float(value), digits)


def _median(values: list[float | None]) -> float | None:
    real = [v for v in values if v is not None]
    return _r(np.median(real)) if real else None


def run_summary(
    *, target: str, label: str, concurrency: int, results: list[RequestResult], duration: float
) -> dict[str, Any]:
    """One target at one concurrency: the serving metrics and the per-request speeds."""
    done = [r for r in results if r.ok]
    out_tokens = sum(r.output_tokens for r in done)
    in_tokens = sum(r.prompt_tokens for r in done)
    itls = [gap for r in done for gap in r.itls]
    duration = max(duration, 1e-9)
    return {
        "target": target,
        "label": label,
        "concurrency": concurrency,
        "requests": len(results),
        "completed": len(done),
        "failed": len(results) - len(done),
        "duration_s": _r(duration, 3),
        "request_throughput": _r(len(done) / duration, 3),
        "output_tps": _r(out_tokens / duration),
        "total_tps": _r((in_tokens + out_tokens) / duration),
        "input_tokens_mean": _r(in_tokens / len(done)) if done else None,
        "output_tokens_mean": _r(out_tokens / len(done)) if done else None,
        "ttft_ms": distribution([r.ttft for r in done if r.ttft is not None], 1000),
        "itl_ms": distribution(itls, 1000),
        "tpot_ms": distribution([t for r in done if (t := r.tpot) is not None], 1000),
        "e2e_ms": distribution([r.e2e for r in done], 1000),
        "prefill_tps_p50": _median([r.prefill_tps for r in done]),
        "decode_tps_p50": _median([r.decode_tps for r in done]),
        "e2e_tps_p50": _median([r.output_tokens / r.e2e for r in done if r.e2e > 0]),
        "ttft_ms_all": [round(r.ttft * 1000, 2) for r in done if r.ttft is not None],
        "errors": sorted({r.error for r in results if r.error})[:10],
    }


# The overhead targets: TTFT added at p50 on one client, decode and end-to-end tokens/s,
# and at 16 concurrent clients (vLLM) the output tokens/s.
TARGETS_SINGLE = {"ttft_added_ms_p50": 15.0, "decode_ratio": 0.98, "e2e_tps_ratio": 0.98}
TARGETS_LOADED = {"output_tps_ratio": 0.95}
LOADED_FROM = 16
DOORS = ("v1", "websocket")
RAWS = ("raw_server", "raw_inprocess")


def _ratio(a: float | None, b: float | None) -> float | None:
    return _r(a / b, 3) if a is not None and b else None


def comparisons(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each platform door against the raw engine at the same concurrency (its own server when
    measured, else in process), with the targets and whether each was met."""
    by = {(r["target"], r["concurrency"]): r for r in runs if r["completed"]}
    out = []
    for (target, concurrency), door in sorted(by.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        if target not in DOORS:
            continue
        raw_name = next((name for name in RAWS if (name, concurrency) in by), None)
        if raw_name is None:
            continue
        raw = by[(raw_name, concurrency)]
        d_ttft, r_ttft = door["ttft_ms"]["p50"], raw["ttft_ms"]["p50"]
        row: dict[str, Any] = {
            "door": target,
            "raw": raw_name,
            "concurrency": concurrency,
            "ttft_added_ms_p50": _r(d_ttft - r_ttft) if d_ttft is not None and r_ttft is not None else None,
            "decode_ratio": _ratio(door["decode_tps_p50"], raw["decode_tps_p50"]),
            "e2e_tps_ratio": _ratio(door["e2e_tps_p50"], raw["e2e_tps_p50"]),
            "output_tps_ratio": _ratio(door["output_tps"], raw["output_tps"]),
        }
        targets = dict(TARGETS_SINGLE) if concurrency == 1 else {}
        if concurrency >= LOADED_FROM:
            targets.update(TARGETS_LOADED)
        row["targets"] = targets
        row["met"] = {
            name: (row[name] <= goal if name.startswith("ttft") else row[name] >= goal)
            if row[name] is not None
            else None
            for name, goal in targets.items()
        }
        out.append(row)
    return out
