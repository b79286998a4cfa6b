"""llama.cpp through llama-cpp-python, on a GGUF file.

The chat template comes from the GGUF's own metadata and is rendered by llama-cpp-python's
``Jinja2ChatFormatter`` (an ``ImmutableSandboxedEnvironment``: a template cannot reach Python).
Rendering it here, rather than calling ``create_chat_completion``, gives the exact prompt token
count for the context-window cut and for ``usage``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from typing import Any

from pydantic import Field

from inference.backends.base import (
    Backend,
    BackendError,
    ChatMessage,
    CheckResult,
    Chunk,
    GenerationParams,
    ModelSpec,
    StopFlag,
    Usage,
    missing_package,
)
from inference.backends.options import BackendOptions
from inference.llama_runtime import llama_load

# Tokens a chat template adds around each message (<|im_start|>role\n ... <|im_end|>\n).
_PER_MESSAGE_OVERHEAD = 5


class LlamaCppOptions(BackendOptions):
    n_ctx: int | None = Field(
        None, ge=128, le=1_048_576, description="Context size; defaults to the agent's context window."
    )
    n_threads: int | None = Field(
        None, ge=1, le=512, description="CPU threads; default: the fastest, measured here (inference.llama_runtime)."
    )
    n_batch: int = Field(512, ge=1, le=65_536, description="Prompt-processing batch size.")
    n_gpu_layers: int = Field(0, ge=-1, le=1000, description="Layers offloaded to a GPU; -1 = all.")
    use_mmap: bool = Field(True, description="Memory-map the GGUF instead of reading it in.")
    seed: int | None = Field(None, ge=0, description="Sampling seed; None = random.")


class LlamaCppBackend(Backend):
    name = "llama_cpp"
    label = "llama.cpp"
    formats = frozenset({"gguf"})
    options_schema = LlamaCppOptions
    supports_stop = True
    supports_concurrent = False
    reuses_kv_cache = True  # llama.cpp keeps the longest common prefix of the last prompt

    options: LlamaCppOptions

    def __init__(self, *, model_path: str, options: Any, api_key: str = "", n_ctx: int = 2048) -> None:
        super().__init__(model_path=model_path, options=options, api_key=api_key)
        self._n_ctx = options.n_ctx or n_ctx
        self._llm: Any = None
        self._formatter: Any = None
        # A llama.cpp context serves one sequence at a time.
        self._lock = threading.Lock()

    @classmethod
    def cache_key(cls, *, model_path: str, options: Any, api_key: str = "", n_ctx: int = 2048) -> tuple[Any, ...]:
        return (cls.name, model_path, options.model_dump_json(), options.n_ctx or n_ctx)

    @classmethod
    def load_kwargs(cls, spec: ModelSpec) -> dict[str, Any]:
        return {**super().load_kwargs(spec), "n_ctx": spec.context_window}

    def load(self) -> None:
        try:
            import llama_cpp
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter
        except ImportError:
            raise missing_package("llama-cpp-python", "llama_cpp") from None
        if not os.path.isfile(self.model_path):
            raise BackendError(f"GGUF file not found on this worker: {self.model_path}")
        opts = self.options
        try:
            self._llm = llama_load(
                model_path=self.model_path,
                n_ctx=self._n_ctx,
                n_threads=opts.n_threads,
                n_batch=opts.n_batch,
                n_gpu_layers=opts.n_gpu_layers,
                use_mmap=opts.use_mmap,
                seed=opts.seed if opts.seed is not None else llama_cpp.LLAMA_DEFAULT_SEED,
                verbose=False,
            )
        except ValueError as exc:
            raise BackendError(f"llama.cpp could not load {self.model_path}: {exc}") from exc
        meta = self._llm.metadata
        template = meta.get("tokenizer.chat_template")
        if not template:
            raise BackendError(f"{self.model_path} has no chat template in its metadata")
        vocab = self._llm._model
        eos = self._llm.detokenize([self._llm.token_eos()], special=True).decode("utf-8", "replace")
        bos = self._llm.detokenize([self._llm.token_bos()], special=True).decode("utf-8", "replace")
        del vocab
        self._formatter = Jinja2ChatFormatter(
            template=template, eos_token=eos, bos_token=bos, stop_token_ids=[self._llm.token_eos()]
        )

    def _render(self, messages: list[ChatMessage]) -> tuple[str, list[str]]:
        result = self._formatter(messages=messages)
        stop = result.stop if isinstance(result.stop, list) else ([result.stop] if result.stop else [])
        return result.prompt, stop

    def _tokenize(self, text: str) -> list[int]:
        tokens: list[int] = self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        return tokens

    def count_tokens(self, messages: list[ChatMessage]) -> int:
        if self._formatter is None:
            raise BackendError("model not loaded")
        prompt, _ = self._render(messages)
        return len(self._tokenize(prompt))

    def context_length(self) -> int | None:
        return int(self._llm.n_ctx()) if self._llm is not None else None

    def memory_bytes(self) -> int:
        return os.path.getsize(self.model_path) if os.path.isfile(self.model_path) else 0

    def stream_chat(
        self,
        messages: list[ChatMessage],
        params: GenerationParams,
        *,
        should_stop: StopFlag = lambda: False,
        session_key: str | None = None,
    ) -> Iterator[Chunk]:
        if self._llm is None:
            raise BackendError("model not loaded")
        prompt, template_stop = self._render(messages)
        prompt_tokens = self._tokenize(prompt)
        room = self._llm.n_ctx() - len(prompt_tokens)
        if room <= 0:
            raise BackendError(
                f"The prompt takes {len(prompt_tokens)} tokens; the context window is {self._llm.n_ctx()}."
            )
        max_tokens = max(1, min(params.max_tokens, room))
        stop = list(dict.fromkeys([*template_stop, *params.stop]))
        with self._lock:
            stream = self._llm.create_completion(
                prompt=prompt_tokens,
                max_tokens=max_tokens,
                temperature=params.temperature,
                top_p=params.top_p,
                repeat_penalty=params.repetition_penalty,
                stop=stop,
                seed=params.seed,
                stream=True,
            )
            produced = 0
            finish: str | None = None
            last_poll = 0.0
            try:
                for part in stream:
                    choice = part["choices"][0]
                    text = choice.get("text") or ""
                    if text:
                        produced += 1
                        yield Chunk(text=text)
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
                    now = time.monotonic()
                    if now - last_poll >= 0.05:
                        last_poll = now
                        if should_stop():
                            finish = "cancelled"
                            break
            finally:
                stream.close()
            # Tokens sampled = tokens the context grew by, past the prompt.
            completion = max(produced, int(self._llm.n_tokens) - len(prompt_tokens))
            yield Chunk(
                finish_reason=finish or "stop",
                usage=Usage(prompt_tokens=len(prompt_tokens), completion_tokens=completion),
            )

    def close(self) -> None:
        if self._llm is not None:
            self._llm.close()
            self._llm = None

    @classmethod
    def check(cls) -> CheckResult:
        try:
            import llama_cpp
        except ImportError:
            return CheckResult(False, str(missing_package("llama-cpp-python", "llama_cpp")))
        return CheckResult(True, f"llama-cpp-python {llama_cpp.__version__}")
