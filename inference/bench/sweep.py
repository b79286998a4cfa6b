"""A whole benchmark: every target at every concurrency level, then the comparisons and files.

Targets, measured one after another (never two at once: they would share the cores): the engine
in this process and the engine's own server (``compare_raw``), then the platform's doors (``/v1``
and the websocket, for an agent). Each target gets one warm-up request first (a worker loads its
model on its first reply). At each level N clients each send their next request as soon as the
last one ended until ``requests`` are done, as vLLM's serving benchmark does with its
``--max-concurrency``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inference.bench.doors import Door, LlamaInProcess, OpenAIDoor, OpenVINOInProcess, Sampling, WebsocketDoor
from inference.bench.machine import machine_describe
from inference.bench.stats import RequestResult, comparisons, run_summary
from inference.bench.workload import estimate_tokens, prompts_make

Progress = Callable[[float, str], None]


@dataclass
class Spec:
    concurrency: list[int]
    requests: int
    input_tokens: int
    output_tokens: int
    compare_raw: bool = True
    doors: list[str] = field(default_factory=lambda: ["v1", "websocket"])
    # The model: {"name", "backend", "format", "path", "options"}; the agent's, or an artifact's.
    model: dict[str, Any] = field(default_factory=dict)
    agent: str | None = None
    platform_url: str = ""
    token: str = ""
    system_prompt: str = "You are a helpful assistant."
    params: dict[str, Any] = field(default_factory=dict)  # as given, for the record


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode} before answering")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"no answer from {url} within {timeout:.0f} s")


@contextlib.contextmanager
def llama_server(path: str, *, n_threads: int, n_ctx: int, log: Path) -> Iterator[str]:
    """llama-cpp-python's own OpenAI server on the GGUF (``inference.llama_server``)."""
    port = _free_port()
    # interrupt_requests: the server's default cuts a streaming request short when the next arrives.
    argv = [sys.executable, "-m", "inference.llama_server", "--model", path, "--n_ctx", str(n_ctx),
            "--n_threads", str(n_threads), "--interrupt_requests", "False",
            "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_http(f"http://127.0.0.1:{port}/v1/models", proc, timeout=120)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


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


def _threads(spec: Spec) -> int:
    from inference.llama_runtime import default_threads

    return int((spec.model.get("options") or {}).get("n_threads") or default_threads())


def _n_ctx(spec: Spec) -> int:
    return int(max(2048, spec.input_tokens + spec.output_tokens + 256))


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
        if backend == "llama_cpp" and path:
            threads = _threads(spec)
            if spec.compare_raw:
                progress(2, "loading the engine in process")
                raw = LlamaInProcess.load(path, sampling, n_threads=threads, n_ctx=_n_ctx(spec))
                stack.callback(raw.llm.close)
                count = raw.count
                doors.append(raw)
                url = stack.enter_context(
                    llama_server(path, n_threads=threads, n_ctx=_n_ctx(spec), log=workdir / "llama_server.log")
                )
                doors.append(OpenAIDoor(
                    target="raw_server", label="llama.cpp server (raw)", sampling=sampling, base_url=url,
                    extra_body={"repeat_penalty": 1.0}, count=raw.count_prompt,
                ))  # fmt: skip
            else:
                from inference.llama_runtime import llama_load

                vocab = llama_load(model_path=path, vocab_only=True, verbose=False)
                count = lambda text: len(vocab.tokenize(text.encode(), add_bos=False, special=True))  # noqa: E731
        elif backend == "openvino" and path and spec.compare_raw:
            progress(2, "loading the engine in process")
            ov = OpenVINOInProcess.load(path, sampling)
            doors.append(ov)
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
        if not doors:
            raise ValueError("nothing to measure: give an agent (the platform's doors) or compare_raw on a model")
        progress(3, f"making {spec.requests} prompts of {spec.input_tokens} tokens")
        prompts = prompts_make(spec.requests, spec.input_tokens, count)
        runs = asyncio.run(_all(doors, prompts, spec, progress, log))
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


async def _all(doors: list[Door], prompts: list[str], spec: Spec, progress: Progress,
               log: Callable[[str], None]) -> list[dict[str, Any]]:  # fmt: skip
    plan = [(c, d) for c in spec.concurrency for d in doors if d.max_concurrency is None or c <= d.max_concurrency]
    runs: list[dict[str, Any]] = []
    warmed: set[str] = set()
    try:
        for i, (concurrency, door) in enumerate(plan):
            progress(5 + 90 * i / len(plan), f"{door.label} at {concurrency} concurrent")
            if door.target not in warmed:
                warm = await door.request(prompts[0])
                warmed.add(door.target)
                if not warm.ok:
                    log(f"{door.label}: warm-up failed: {warm.error}")
            results, duration = await _level(door, prompts, concurrency)
            run = run_summary(target=door.target, label=door.label, concurrency=concurrency, results=results,
                              duration=duration)  # fmt: skip
            runs.append(run)
            log(f"{door.label} at {concurrency}: {run['completed']}/{run['requests']} ok, "
                f"{run['output_tps']} out tok/s, TTFT p50 {run['ttft_ms']['p50']} ms, "
                f"ITL p50 {run['itl_ms']['p50']} ms, decode {run['decode_tps_p50']} tok/s")  # fmt: skip
    finally:
        for door in doors:
            await door.close()
    progress(96, "writing the report")
    return runs
