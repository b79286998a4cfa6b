"""The ``benchmark`` kind: the seeds' numbers for an agent or a model artifact.

``{"agent", "concurrency": [1, 4, 16], "requests", "input_tokens", "output_tokens", "compare_raw"}``
measures the agent through the platform's doors (``/v1`` and the websocket, as the job's owner,
with a short-lived API token) and, with ``compare_raw``, the same workload on the raw engine in the
same run: llama-cpp-python in process and its own server for a GGUF, openvino-genai in process
for OpenVINO IR. Without an agent (``source`` only) only the raw engine is measured. The work is
``pipeline.bench`` in a child process (``pipeline.jobs.steps.benchmark``); the files (bench.json,
bench.csv, throughput.png, ttft.png) go to the job's own folder, served by ``/api/jobs/<id>/files/``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from django.conf import settings
from pydantic import Field, field_validator, model_validator

from pipeline.jobs.base import Format, Kind, Output, Params
from pipeline.jobs.context import JobContext
from pipeline.jobs.paths import job_files_dir
from pipeline.jobs.sources import agent_resolve, agent_source
from sessions_app.tokens import token_for_job

SOURCES = (Format.GGUF, Format.OPENVINO)


class BenchmarkParams(Params):
    source: int | None = Field(  # type: ignore[assignment]
        None, description="The model artifact (GGUF or OpenVINO IR); filled in from agent."
    )
    agent: str | None = Field(None, min_length=1, max_length=100, description="The agent to measure (its slug).")
    concurrency: list[int] = Field(
        [1, 4, 16], min_length=1, max_length=8, description="Concurrent clients at each level, e.g. [1, 4, 16, 64]."
    )
    requests: int = Field(16, ge=1, le=2000, description="Requests at each level (per target).")
    input_tokens: int = Field(1000, ge=8, le=32_000, description="Prompt length in tokens.")
    output_tokens: int = Field(128, ge=2, le=8192, description="Tokens to generate per request (max_tokens).")
    compare_raw: bool = Field(True, description="Run the same workload on the raw engine in the same run.")
    doors: list[Literal["v1", "websocket"]] = Field(
        ["v1", "websocket"], min_length=1, description="The platform's doors to measure (with an agent)."
    )

    @field_validator("concurrency")
    @classmethod
    def _levels(cls, value: list[int]) -> list[int]:
        if any(c < 1 or c > 256 for c in value):
            raise ValueError("each level is 1 to 256 clients")
        return sorted(set(value))

    @model_validator(mode="after")
    def _something(self) -> BenchmarkParams:
        if self.agent is None and not self.compare_raw:
            raise ValueError("nothing to measure: give an agent, or compare_raw with a source artifact")
        return self


def _prepare(p: BenchmarkParams, user: Any, commit: bool) -> BenchmarkParams:
    return agent_source(  # type: ignore[no-any-return]
        p, user, SOURCES, needs="benchmark measures GGUF or OpenVINO IR", missing="give an agent or a source artifact"
    )


def run_benchmark(ctx: JobContext, p: BenchmarkParams) -> list[Output]:
    src = ctx.source
    backend = "llama_cpp" if src.format == Format.GGUF else "openvino"
    options: dict[str, Any] = {}
    system_prompt = "You are a helpful assistant."
    secrets: dict[str, str] = {}
    revoke: Callable[[], None] = lambda: None  # noqa: E731
    if p.agent:
        agent = agent_resolve(p.agent, ctx.job.created_by)
        backend, options = agent.get("backend") or backend, agent.get("backend_options") or {}
        system_prompt = agent.get("system_prompt") or system_prompt
        token, revoke = token_for_job(ctx.job.created_by, f"benchmark job {ctx.job.pk}")
        secrets["CHATSITE_BENCH_TOKEN"] = token
    out_dir = job_files_dir(ctx.job.pk)
    params = {
        "out_dir": str(out_dir), "agent": p.agent, "platform_url": settings.PLATFORM_URL,
        "model": {"name": src.name, "backend": backend, "format": src.format, "quantization": src.quantization,
                  "path": src.path, "options": options, "artifact": src.pk},
        "system_prompt": system_prompt, "params": p.model_dump(exclude={"then"}),
    }  # fmt: skip
    try:
        out = ctx.step("benchmark", params, span=(0, 100), extra_env=secrets)
    finally:
        revoke()
    ctx.results.pop("benchmark", None)
    ctx.results.update(out)
    return []


BENCHMARK = Kind(
    "benchmark", BenchmarkParams, SOURCES, run_benchmark,
    "Prefill and decode tokens/s, TTFT and inter-token latency of an agent at 1..N concurrent clients, through "
    "/v1 and the websocket, side by side with the raw engine (in process and its own server) in the same run",
    prepare=_prepare,
)  # fmt: skip
