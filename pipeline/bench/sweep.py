"""A whole benchmark: every target at every concurrency level, then the comparisons and files.

Targets, measured one after another (never two at once: they would share the cores): the engine
in this process and the engine's own server (``compare_raw``: llama.cpp in process and its
server, openvino-genai in process, vLLM's own server), then the platform's doors (``/v1`` and the
websocket, for an agent). Each target gets one warm-up request first (a worker loads its
model on its first reply). At each level N clients each send their next request as soon as the
last one ended until ``requests`` are done, as vLLM's serving benchmark does with its
``--max-concurrency``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.bench.doors import Door, OpenAIDoor, Sampling, WebsocketDoor
from pipeline.bench.machine import machine_describe
from pipeline.bench.raw import RAW_ENGINES
from pipeline.bench.spec import Progress, Spec
from pipeline.bench.stats import RequestResult, comparisons, run_summary
from pipeline.bench.workload import estimate_tokens, prompts_make


async def _level(door: Door, prompts: list[str], concurrency: int) -> tuple[list[RequestResult], float]:
    queue: asyncio.Queue[str] = asyncio.Queue()
    for prompt in prompts:
        queue.put_nowait(prompt)
    results: list[RequestResult] = []

    async def client() -> None:
        while True:
            try:
                prompt = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            results.append(await door.request(prompt))

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return results, time.perf_counter() - start


def benchmark_run(spec: Spec, *, progress: Progress = lambda p, s: None, log: Callable[[str], None] = print,
                  workdir: Path | None = None) -> dict[str, Any]:  # fmt: skip
    """Measure every target; return the result (see ``report``)."""
    sampling = Sampling(max_tokens=spec.output_tokens, system=spec.system_prompt)
    workdir = workdir or Path(tempfile.mkdtemp(prefix="chatsite-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    backend, path = spec.model.get("backend"), spec.model.get("path") or ""
    progress(1, "describing the machine")
    machine = machine_describe()
    log(f"machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_bandwidth_gbs']} GB/s, "
        f"llama.cpp kernels {machine.get('llama_cpu_variant')}")  # fmt: skip
    with contextlib.ExitStack() as stack:
        doors: list[Door] = []
        count: Callable[[str], int] = estimate_tokens
        engine = RAW_ENGINES.get(backend or "")
        if engine is not None and path:
            count = engine(spec, sampling, workdir, progress).targets(stack, doors) or count
        if spec.agent and spec.platform_url:
            for name in spec.doors:
                if name == "v1":
                    doors.append(OpenAIDoor(
                        target="v1", label="platform /v1", sampling=sampling, base_url=spec.platform_url + "/v1",
                        api_key=spec.token, model=spec.agent, extra_body={"repetition_penalty": 1.0},
                    ))  # fmt: skip
                elif name == "websocket":
                    doors.append(WebsocketDoor(
                        target="websocket", label="platform websocket", sampling=sampling,
                        base_url=spec.platform_url, token=spec.token, agent=spec.agent,
                    ))  # fmt: skip
        doors += spec.extra_doors
        if not doors:
            raise ValueError("nothing to measure: give an agent (the platform's doors) or compare_raw on a model")
        progress(3, f"making {spec.requests} prompts of {spec.input_tokens} tokens for each target")
        # Each target its own prompts (the same lengths), and one more each to warm up with.
        prompts = {
            d.target: prompts_make(spec.requests + 1, spec.input_tokens, count, first=k * (spec.requests + 1))
            for k, d in enumerate(doors)
        }
        settle = engine.settle_seconds if engine is not None else 0.0
        runs = asyncio.run(_all(doors, prompts, spec, progress, log, settle))
    result = {
        "version": 1,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {**machine, "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
        "params": spec.params
        or {
            "agent": spec.agent,
            "concurrency": spec.concurrency,
            "requests": spec.requests,
            "input_tokens": spec.input_tokens,
            "output_tokens": spec.output_tokens,
            "compare_raw": spec.compare_raw,
            "doors": spec.doors,
        },  # fmt: skip
        "model": {k: v for k, v in spec.model.items() if k != "path"},
        "runs": runs,
        "comparisons": comparisons(runs),
        "external": [],
    }
    return result


async def _interleaved(
    doors: list[Door], prompts: dict[str, list[str]], settle: float = 0.0
) -> dict[str, tuple[list[RequestResult], float]]:
    """One client: each prompt goes to every target in turn (the order rotating), so that a
    neighbour's load on the machine falls on all of them alike; a target's duration is the sum of
    its own requests' times. ``settle`` seconds pass before a request to another target than the
    last (an engine that just answered may still hold a core)."""
    out: dict[str, tuple[list[RequestResult], float]] = {d.target: ([], 0.0) for d in doors}
    last = None
    for i in range(len(prompts[doors[0].target])):
        for door in doors[i % len(doors) :] + doors[: i % len(doors)]:
            if settle and last is not None and last != door.target:
                await asyncio.sleep(settle)
            last = door.target
            result = await door.request(prompts[door.target][i])
            results, busy = out[door.target]
            results.append(result)
            out[door.target] = (results, busy + max(result.end - result.start, 0.0))
    return out


def _summary(door: Door, concurrency: int, results: list[RequestResult], duration: float,
             log: Callable[[str], None]) -> dict[str, Any]:  # fmt: skip
    run = run_summary(target=door.target, label=door.label, concurrency=concurrency, results=results,
                      duration=duration)  # fmt: skip
    log(f"{door.label} at {concurrency}: {run['completed']}/{run['requests']} ok, "
        f"{run['output_tps']} out tok/s, TTFT p50 {run['ttft_ms']['p50']} ms, "
        f"ITL p50 {run['itl_ms']['p50']} ms, decode {run['decode_tps_p50']} tok/s")  # fmt: skip
    return run


async def _all(doors: list[Door], prompts: dict[str, list[str]], spec: Spec, progress: Progress,
               log: Callable[[str], None], settle: float = 0.0) -> list[dict[str, Any]]:  # fmt: skip
    runs: list[dict[str, Any]] = []
    try:
        progress(5, "warming up every target")
        for door in doors:  # a worker loads its model on its first reply
            warm = await door.request(prompts[door.target][-1])
            if not warm.ok:
                log(f"{door.label}: warm-up failed: {warm.error}")
        levels = sorted(spec.concurrency)
        for n, concurrency in enumerate(levels):
            able = [d for d in doors if d.max_concurrency is None or concurrency <= d.max_concurrency]
            progress(8 + 88 * n / len(levels), f"{len(able)} targets at {concurrency} concurrent")
            mine = {d.target: prompts[d.target][:-1] for d in able}
            if concurrency == 1:
                measured = await _interleaved(able, mine, settle)
                runs += [_summary(d, 1, *measured[d.target], log) for d in able]
                continue
            for k, door in enumerate(able):
                if k and settle:
                    await asyncio.sleep(settle)
                results, duration = await _level(door, mine[door.target], concurrency)
                runs.append(_summary(door, concurrency, results, duration, log))
    finally:
        for door in doors:
            await door.close()
    progress(96, "writing the report")
    return runs
