"""What a benchmark measures: the targets' model, the workload and the doors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipeline.bench.doors import Door

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
