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
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.bench.doors import Door, LlamaInProcess, OpenAIDoor, OpenVINOInProcess, Sampling, WebsocketDoor
from pipeline.bench.machine import machine_describe
from pipeline.bench.stats import RequestResult, comparisons, run_summary
from pipeline.bench.workload import estimate_tokens, prompts_make

Progress = Callable[[float, str], None]


@dataclass
class Spec:
    concurrency: list[int]
    requests: int
    input_tokens: int
    output_tokens: int
    compare_raw: bool = True
    raw_server: bool = True  # with compare_raw, also the engine's own server (llama.cpp, vLLM)
    doors: list[str] = field(default_factory=lambda: ["v1", "websocket"])
    # The model: {"name", "backend", "format", "path", "options"}; the agent's, or an artifact's.
    model: dict[str, Any] = field(default_factory=dict)
    agent: str | None = None
    platform_url: str = ""
    token: str = ""
    system_prompt: str = "You are a helpful assistant."
    params: dict[str, Any] = field(default_factory=dict)  # as given, for the record
    extra_doors: list[Door] = field(default_factory=list)  # another engine's server, say


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
def server_process(
    argv: list[str], *, health: str, log: Path, timeout: float = 120, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """An engine's own server, logging to ``log``, until ``health`` answers; stopped on exit."""
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    try:
        _wait_http(health, proc, timeout=timeout)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextlib.contextmanager
def llama_server(path: str, *, n_threads: int, n_ctx: int, log: Path) -> Iterator[str]:
    """llama-cpp-python's own OpenAI server on the GGUF (``inference.llama_server``)."""
    port = _free_port()
    # interrupt_requests: the server's default cuts a streaming request short when the next arrives.
    argv = [sys.executable, "-m", "inference.llama_server", "--model", path, "--n_ctx", str(n_ctx),
            "--n_threads", str(n_threads), "--interrupt_requests", "False",
            "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    with server_process(argv, health=f"http://127.0.0.1:{port}/v1/models", log=log):
        yield f"http://127.0.0.1:{port}/v1"


def vllm_serve_prefix() -> list[str] | None:
    """How to start vLLM's own server from here: this environment's vLLM, else the vLLM
    environment beside the project (``make vllm-venv``), else None. No Django settings here: the
    benchmark step runs without them (and without the worker's environment)."""
    from inference.vllm_server import serve_command

    command = serve_command()
    if command is not None:
        return command
    python = Path(__file__).resolve().parents[2] / ".venv-vllm" / "bin" / "python"
    return [str(python), "-m", "vllm.entrypoints.openai.api_server"] if python.exists() else None


@contextlib.contextmanager
def vllm_server(path: str, *, options: dict[str, Any], log: Path) -> Iterator[str]:
    """vLLM's own OpenAI server on the agent's model with the agent's engine options, as the
    platform's vllm worker starts it (``inference.vllm_server.ServeSpec``)."""
    from inference.vllm_server import ServeSpec

    prefix = vllm_serve_prefix()
    if prefix is None:
        raise RuntimeError("no vLLM here to run its own server (make vllm-venv); set compare_raw to false")
    spec = ServeSpec(
        model=path, served_model_name="raw", tensor_parallel_size=int(options.get("tensor_parallel_size", 1)),
        dtype=str(options.get("dtype", "auto")), max_model_len=options.get("max_model_len"),
        gpu_memory_utilization=float(options.get("gpu_memory_utilization", 0.9)),
        quantization=options.get("quantization"), w4a8=bool(options.get("w4a8", False)),
    )  # fmt: skip
    port = _free_port()
    argv, health = [*prefix, *spec.args(port)], f"http://127.0.0.1:{port}/health"
    with server_process(argv, health=health, log=log, timeout=900, env={**os.environ, **spec.environment()}):
        yield f"http://127.0.0.1:{port}/v1"


def _hf_count(path: str) -> Callable[[str], int]:
    """Tokens of a text by the model's own tokenizer (an HF folder), else an estimate."""
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception:
        return estimate_tokens
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False))


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
            if spec.compare_raw and spec.raw_server:
                url = stack.enter_context(
                    llama_server(path, n_threads=threads, n_ctx=_n_ctx(spec), log=workdir / "llama_server.log")
                )
                doors.append(OpenAIDoor(
                    target="raw_server", label="llama.cpp server (raw)", sampling=sampling, base_url=url,
                    extra_body={"repeat_penalty": 1.0}, count=raw.count_prompt,
                ))  # fmt: skip
            if not spec.compare_raw:
                from inference.llama_runtime import llama_load

                vocab = llama_load(model_path=path, vocab_only=True, verbose=False)
                count = lambda text: len(vocab.tokenize(text.encode(), add_bos=False, special=True))  # noqa: E731
        elif backend == "openvino" and path and spec.compare_raw:
            progress(2, "loading the engine in process")
            ov = OpenVINOInProcess.load(path, sampling)
            doors.append(ov)
        elif backend == "vllm" and path:
            count = _hf_count(path)
            if spec.compare_raw and spec.raw_server and (spec.model.get("options") or {}).get("mode") != "external":
                progress(2, "starting vLLM's own server")
                options = dict(spec.model.get("options") or {})
                url = stack.enter_context(vllm_server(path, options=options, log=workdir / "vllm_server.log"))
                doors.append(OpenAIDoor(
                    target="raw_server", label="vLLM server (raw)", sampling=sampling, base_url=url, model="raw",
                    extra_body={"repetition_penalty": 1.0},
                ))  # fmt: skip
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


async def _interleaved(
    doors: list[Door], prompts: dict[str, list[str]]
) -> dict[str, tuple[list[RequestResult], float]]:
    """One client: each prompt goes to every target in turn (the order rotating), so that a
    neighbour's load on the machine falls on all of them alike; a target's duration is the sum of
    its own requests' times."""
    out: dict[str, tuple[list[RequestResult], float]] = {d.target: ([], 0.0) for d in doors}
    for i in range(len(prompts[doors[0].target])):
        for door in doors[i % len(doors) :] + doors[: i % len(doors)]:
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
               log: Callable[[str], None]) -> list[dict[str, Any]]:  # fmt: skip
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
                measured = await _interleaved(able, mine)
                runs += [_summary(d, 1, *measured[d.target], log) for d in able]
                continue
            for door in able:
                results, duration = await _level(door, mine[door.target], concurrency)
                runs.append(_summary(door, concurrency, results, duration, log))
    finally:
        for door in doors:
            await door.close()
    progress(96, "writing the report")
    return runs
