"""vLLM. For now only mode "external": a ``vllm serve`` someone else runs, over its OpenAI API.

vLLM's OpenAI-compatible server takes its own sampling fields (``top_k``, ``min_p``,
``repetition_penalty``, ...) beside OpenAI's in the request body, so external mode is the
``openai_compat`` backend with those fields added. Hosting the engine in a vllm worker (mode
"hosted") comes later.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from inference.backends.base import (
    Backend,
    BackendError,
    ChatMessage,
    CheckResult,
    Chunk,
    GenerationParams,
    StopFlag,
)
from inference.backends.openai_compat import OpenAICompatBackend
from inference.backends.options import OpenAICompatOptions, VLLMOptions


class VLLMBackend(Backend):
    name = "vllm"
    options_schema = VLLMOptions
    supports_stop = True
    supports_concurrent = True  # vLLM batches concurrent requests
    counts_tokens = False  # external mode has no tokenizer here

    options: VLLMOptions

    def __init__(self, *, model_path: str, options: Any, api_key: str = "") -> None:
        super().__init__(model_path=model_path, options=options, api_key=api_key)
        self._remote: OpenAICompatBackend | None = None

    def load(self) -> None:
        opts = self.options
        if opts.mode != "external":
            raise BackendError(
                "The hosted vLLM engine runs on a vllm worker: this build cannot host it yet. "
                "To use a vLLM server you run yourself (vllm serve ...), set the agent's option "
                '"mode" to "external" and "base_url" to the server\'s /v1 URL.'
            )
        assert opts.base_url is not None  # VLLMOptions refuses external mode without one
        sampling = {"top_k": opts.top_k, "min_p": opts.min_p, "seed": opts.seed}
        remote_options = OpenAICompatOptions.model_validate(
            {
                "base_url": str(opts.base_url),
                "model": opts.served_model_name,
                "timeout": opts.timeout,
                "extra_body": {k: v for k, v in sampling.items() if v is not None},
            }
        )
        remote = OpenAICompatBackend(model_path=self.model_path, options=remote_options, api_key=self.api_key)
        remote.load()
        self._remote = remote

    def _loaded(self) -> OpenAICompatBackend:
        if self._remote is None:
            raise BackendError("model not loaded")
        return self._remote

    def stream_chat(
        self,
        messages: list[ChatMessage],
        params: GenerationParams,
        *,
        should_stop: StopFlag = lambda: False,
        session_key: str | None = None,
    ) -> Iterator[Chunk]:
        yield from self._loaded().stream_chat(messages, params, should_stop=should_stop, session_key=session_key)

    def count_tokens(self, messages: list[ChatMessage]) -> int:
        return self._loaded().count_tokens(messages)

    def context_length(self) -> int | None:
        return self._remote.context_length() if self._remote is not None else None

    def close(self) -> None:
        if self._remote is not None:
            self._remote.close()
            self._remote = None

    @classmethod
    def check(cls) -> CheckResult:
        result = OpenAICompatBackend.check()
        if not result.ok:
            return result
        return CheckResult(True, f'mode "external" through {result.detail}; mode "hosted" not yet')
