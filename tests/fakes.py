"""A scripted backend for unit tests of the reply logic (never for integration tests)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, ClassVar

from django.utils.module_loading import import_string

from inference.backends.base import Backend, BackendError, ChatMessage, Chunk, GenerationParams, StopFlag, Usage
from inference.backends.llama_cpp import LlamaCppOptions


def use_backend(settings: Any, path: str) -> None:
    """Make ``path`` the backend of its name in ``INFERENCE_BACKENDS`` (replacing the real one)."""
    cls = import_string(path)
    keep = [p for p in settings.INFERENCE_BACKENDS if import_string(p).name != cls.name]
    settings.INFERENCE_BACKENDS = [*keep, path]


class FakeBackend(Backend):
    """Stands in for llama.cpp: agents with ``backend="llama_cpp"`` run on it."""

    name = "llama_cpp"
    label = "Scripted (tests)"
    formats = frozenset({"gguf"})
    options_schema = LlamaCppOptions
    # A supervisor's pick is decoded under a choice; the scripted answers of the supervisor tests
    # stand in for it (they test what the platform does with a pick, not the decoding).
    constraints = frozenset({"choice"})
    script: ClassVar[list[str]] = ["Hello", ", ", "world", "."]
    delay: ClassVar[float] = 0.0
    first_delay: ClassVar[float] = 0.0  # a slow model load or prefill: nothing, then the text
    fail_with: ClassVar[BaseException | None] = None
    on_chunk: ClassVar[Any] = None  # called with the chunk's index after each chunk
    loads: ClassVar[int] = 0
    seen_messages: ClassVar[list[list[ChatMessage]]] = []
    answer: ClassVar[Any] = None  # when set, called with the messages: its text is the whole reply

    def __init__(self, *, model_path: str, options: Any, api_key: str = "", n_ctx: int = 2048) -> None:
        super().__init__(model_path=model_path, options=options, api_key=api_key)
        self.n_ctx = n_ctx

    @classmethod
    def cache_key(cls, **kwargs: Any) -> tuple[Any, ...]:
        return ("fake", kwargs["model_path"], id(cls))

    def load(self) -> None:
        type(self).loads += 1

    def count_tokens(self, messages: list[ChatMessage]) -> int:
        return sum(len(m["content"].split()) + 4 for m in messages)

    def stream_chat(
        self, messages: list[ChatMessage], params: GenerationParams, *, should_stop: StopFlag = lambda: False,
        session_key: str | None = None,
    ) -> Iterator[Chunk]:  # fmt: skip
        type(self).seen_messages.append(messages)
        time.sleep(self.first_delay)
        produced = 0
        script = [type(self).answer(messages)] if self.answer is not None else self.script
        for piece in script:
            if self.fail_with is not None and produced == 2:
                raise self.fail_with
            if should_stop():
                yield Chunk(finish_reason="cancelled", usage=Usage(self.count_tokens(messages), produced))
                return
            time.sleep(self.delay)
            produced += 1
            yield Chunk(text=piece)
            if self.on_chunk is not None:
                type(self).on_chunk(produced)
        yield Chunk(finish_reason="stop", usage=Usage(self.count_tokens(messages), produced))


class BrokenBackend(FakeBackend):
    def load(self) -> None:
        raise BackendError("The GPU fell off the bus. Check the worker's driver.", retryable=True)


class BrokenOpenVINOBackend(BrokenBackend):
    """An OpenVINO stand-in whose model never loads."""

    name = "openvino"
    formats = frozenset({"openvino"})
