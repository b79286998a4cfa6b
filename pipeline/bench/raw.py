"""The raw engines a benchmark compares the platform with, one class per backend.

``RAW_ENGINES`` maps an agent's backend to its engine's references: llama.cpp in this process and
llama-cpp-python's own server, openvino-genai in this process, vLLM's own OpenAI server. A backend
with a raw reference adds one class here (``@raw_engine``); the sweep never names a backend. No
Django here: the benchmark runs as a job step in a child process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

from inference.children import free_port, group_stop, spawn
from inference.llama_runtime import default_threads, llama_load
from inference.vllm_server import ServeSpec, serve_command
from pipeline.bench.doors import Door, LlamaInProcess, OpenAIDoor, OpenVINOInProcess, Sampling
from pipeline.bench.spec import Progress, Spec
from pipeline.bench.workload import estimate_tokens

Count = Callable[[str], int]


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
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
    """An engine's own server, logging to ``log``, until ``health`` answers; stopped on exit, and
    with the benchmark if it dies (its own process group, ``inference.children``)."""
    with log.open("ab") as out:
        proc = spawn(argv, env=env, stdout=out, stderr=subprocess.STDOUT, death_signal=signal.SIGTERM, lasting=True)
    try:
        _wait_http(health, proc, timeout=timeout)
        yield proc
    finally:
        group_stop(proc, grace=30)


@contextlib.contextmanager
def llama_server(path: str, *, n_threads: int, n_ctx: int, log: Path) -> Iterator[str]:
    """llama-cpp-python's own OpenAI server on the GGUF (``python -m llama_cpp.server``)."""
    port = free_port()
    # interrupt_requests: the server's default cuts a streaming request short when the next arrives.
    argv = [sys.executable, "-m", "llama_cpp.server", "--model", path, "--n_ctx", str(n_ctx),
            "--n_threads", str(n_threads), "--interrupt_requests", "False",
            "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    with server_process(argv, health=f"http://127.0.0.1:{port}/v1/models", log=log):
        yield f"http://127.0.0.1:{port}/v1"


def vllm_serve_prefix() -> list[str] | None:
    """How to start vLLM's own server from here: this environment's vLLM, else the vLLM
    environment beside the project (``make vllm-venv``), else None. No Django settings here: the
    benchmark step runs without them (and without the worker's environment)."""
    command = serve_command()
    if command is not None:
        return command
    python = Path(__file__).resolve().parents[2] / ".venv-vllm" / "bin" / "python"
    return [str(python), "-m", "vllm.entrypoints.openai.api_server"] if python.exists() else None


@contextlib.contextmanager
def vllm_server(path: str, *, options: dict[str, Any], log: Path) -> Iterator[str]:
    """vLLM's own OpenAI server on the agent's model with the agent's engine options, as the
    platform's vllm worker starts it (``inference.vllm_server.ServeSpec``)."""
    prefix = vllm_serve_prefix()
    if prefix is None:
        raise RuntimeError("no vLLM here to run its own server (make vllm-venv); set compare_raw to false")
    spec = ServeSpec(
        model=path, served_model_name="raw", tensor_parallel_size=int(options.get("tensor_parallel_size", 1)),
        dtype=str(options.get("dtype", "auto")), max_model_len=options.get("max_model_len"),
        gpu_memory_utilization=float(options.get("gpu_memory_utilization", 0.9)),
        quantization=options.get("quantization"), w4a8=bool(options.get("w4a8", False)),
    )  # fmt: skip
    port = free_port()
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


def _threads(spec: Spec) -> int:
    return int((spec.model.get("options") or {}).get("n_threads") or default_threads())


def _n_ctx(spec: Spec) -> int:
    return int(max(2048, spec.input_tokens + spec.output_tokens + 256))


class RawEngine:
    """The references of one backend's engine, measured before the platform's doors."""

    backend: ClassVar[str]
    # Seconds to leave the machine to itself when one client's requests move from one engine to
    # another (the engine just used may still be busy after its answer).
    settle_seconds: ClassVar[float] = 0.0

    def __init__(self, spec: Spec, sampling: Sampling, workdir: Path, progress: Progress) -> None:
        self.spec, self.sampling, self.workdir, self.progress = spec, sampling, workdir, progress
        self.path = str(spec.model.get("path") or "")
        self.options: dict[str, Any] = dict(spec.model.get("options") or {})

    def targets(self, stack: contextlib.ExitStack, doors: list[Door]) -> Count | None:
        """Append this engine's targets to ``doors`` (servers and models closed by ``stack``);
        return how to count a prompt's tokens with the model's own tokenizer, if it has one."""
        raise NotImplementedError


RAW_ENGINES: dict[str, type[RawEngine]] = {}


def raw_engine(cls: type[RawEngine]) -> type[RawEngine]:
    RAW_ENGINES[cls.backend] = cls
    return cls


@raw_engine
class LlamaCppRaw(RawEngine):
    backend = "llama_cpp"

    def targets(self, stack: contextlib.ExitStack, doors: list[Door]) -> Count | None:
        spec, threads = self.spec, _threads(self.spec)
        if not spec.compare_raw:
            vocab = llama_load(model_path=self.path, vocab_only=True, verbose=False)
            return lambda text: len(vocab.tokenize(text.encode(), add_bos=False, special=True))
        self.progress(2, "loading the engine in process")
        raw = LlamaInProcess.load(self.path, self.sampling, n_threads=threads, n_ctx=_n_ctx(spec))
        stack.callback(raw.llm.close)
        doors.append(raw)
        if spec.raw_server:
            url = stack.enter_context(
                llama_server(self.path, n_threads=threads, n_ctx=_n_ctx(spec), log=self.workdir / "llama_server.log")
            )
            doors.append(OpenAIDoor(
                target="raw_server", label="llama.cpp server (raw)", sampling=self.sampling, base_url=url,
                extra_body={"repeat_penalty": 1.0}, count=raw.count_prompt,
            ))  # fmt: skip
        return raw.count


@raw_engine
class OpenVINORaw(RawEngine):
    backend = "openvino"

    def targets(self, stack: contextlib.ExitStack, doors: list[Door]) -> Count | None:
        if self.spec.compare_raw:
            self.progress(2, "loading the engine in process")
            doors.append(OpenVINOInProcess.load(self.path, self.sampling))
        return None


@raw_engine
class VLLMRaw(RawEngine):
    backend = "vllm"
    # After each step a vLLM worker busy-loops for a second (vLLM's shm_broadcast SpinCondition,
    # busy_loop_s=1) waiting for the next one. Measured here (issue 25): with vLLM's own server
    # and the platform's engine on the same 2 cores, 6 of 32 first tokens waited 0.6-1.2 s more,
    # every one of them right after a request to the other engine, none after one to its own.
    settle_seconds = 1.2

    def targets(self, stack: contextlib.ExitStack, doors: list[Door]) -> Count | None:
        spec = self.spec
        if spec.compare_raw and spec.raw_server and self.options.get("mode") != "external":
            self.progress(2, "starting vLLM's own server")
            url = stack.enter_context(
                vllm_server(self.path, options=self.options, log=self.workdir / "vllm_server.log")
            )
            doors.append(OpenAIDoor(
                target="raw_server", label="vLLM server (raw)", sampling=self.sampling, base_url=url, model="raw",
                extra_body={"repetition_penalty": 1.0},
            ))  # fmt: skip
        return _hf_count(self.path)
