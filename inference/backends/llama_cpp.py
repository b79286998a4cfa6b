"""llama.cpp through llama-cpp-python, on a GGUF file.

The chat template comes from the GGUF's own metadata and is rendered by llama-cpp-python's
``Jinja2ChatFormatter`` (an ``ImmutableSandboxedEnvironment``: a template cannot reach Python).
Rendering it here, rather than calling ``create_chat_completion``, gives the exact prompt token
count for the context-window cut and for ``usage``.

Constraints (``GenerationParams.constraint``) are decoded under llama.cpp grammars built by
``inference.grammars``; tool calls in mode "auto" are decoded lazily: free text until the model
opens a call, then the rest under the call's grammar, from the prompt and the text so far (llama.cpp
keeps their common prefix in its KV cache, so the restart costs no prefill).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from pydantic import Field

from inference.backends.base import (
    Backend,
    BackendError,
    ChatMessage,
    CheckResult,
    Chunk,
    ConstraintUnsupported,
    GenerationParams,
    ModelSpec,
    StopFlag,
    Usage,
    missing_package,
)
from inference.backends.options import BackendOptions
from inference.constraints import (
    TOOL_CALL_OPEN,
    Constraint,
    ConstraintError,
    ToolCalls,
    constraint_to_json,
    openai_tools,
    structured_messages,
    template_knows_tools,
)
from inference.grammars import gbnf_for
from inference.llama_runtime import llama_load

log = logging.getLogger(__name__)

# Tokens a chat template adds around each message (<|im_start|>role\n ... <|im_end|>\n).
_PER_MESSAGE_OVERHEAD = 5
# Compiled grammars kept per loaded model (one per distinct constraint).
GRAMMAR_CACHE_SIZE = 32


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
    constraints = frozenset({"json_schema", "regex", "choice", "tools"})

    options: LlamaCppOptions

    def __init__(self, *, model_path: str, options: Any, api_key: str = "", n_ctx: int = 2048) -> None:
        super().__init__(model_path=model_path, options=options, api_key=api_key)
        self._n_ctx = options.n_ctx or n_ctx
        self._llm: Any = None
        self._formatter: Any = None
        self._grammars: OrderedDict[str, Any] = OrderedDict()
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

    @property
    def renders_tools(self) -> bool:  # type: ignore[override]
        """Whether the GGUF's own chat template renders tools (Qwen2.5's, Hermes'): then it tells
        the model its tools and shows earlier calls and results, in the template's own words; the
        calls are still decoded in the ``<tool_call>`` format (Hermes' and Qwen's own)."""
        return template_knows_tools(self.chat_template())

    def _render(self, messages: list[ChatMessage], constraint: Constraint | None = None) -> tuple[str, list[str]]:
        if isinstance(constraint, ToolCalls) and self.renders_tools:
            result = self._formatter(messages=structured_messages(messages), tools=openai_tools(constraint))
        else:
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

    def chat_template(self) -> str:
        return str(self._llm.metadata.get("tokenizer.chat_template", "")) if self._llm is not None else ""

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
        constraint = params.constraint
        self.constraint_check(constraint)
        prompt, template_stop = self._render(messages, constraint)
        prompt_tokens = self._tokenize(prompt)
        room = self._llm.n_ctx() - len(prompt_tokens)
        if room <= 0:
            raise BackendError(
                f"The prompt takes {len(prompt_tokens)} tokens; the context window is {self._llm.n_ctx()}."
            )
        max_tokens = max(1, min(params.max_tokens, room))
        stop = list(dict.fromkeys([*template_stop, *params.stop]))
        # Tool calls in mode "auto" run free until the model opens a call, then go on under the
        # call's grammar (what llama.cpp's grammar triggers do).
        lazy = isinstance(constraint, ToolCalls) and constraint.mode == "auto"
        with self._lock:
            grammar = self._grammar(constraint, call_opened=lazy) if constraint is not None else None
            decode = functools.partial(self._decode, params=params, should_stop=should_stop)
            if grammar is not None and not lazy:
                # A stop string would cut the grammar's text short of its language.
                segment = decode(prompt_tokens, max_tokens=max_tokens, stop=template_stop, grammar=grammar)
            else:
                trigger = TOOL_CALL_OPEN if lazy else ""
                segment = decode(prompt_tokens, max_tokens=max_tokens, stop=stop, trigger=trigger)
            free_text = ""
            for text in segment:
                free_text += text
                yield Chunk(text=text)
            finish, produced = segment.finish, segment.produced
            if finish == "trigger":
                tokens = prompt_tokens + self._llm.tokenize(free_text.encode("utf-8"), add_bos=False, special=False)
                budget = min(max_tokens - (len(tokens) - len(prompt_tokens)), self._llm.n_ctx() - len(tokens))
                finish = "length"
                if budget > 0:
                    segment = decode(tokens, max_tokens=budget, stop=template_stop, grammar=grammar)
                    for text in segment:
                        yield Chunk(text=text)
                    finish, produced = segment.finish, produced + segment.produced
            # Tokens sampled = tokens the context grew by, past the prompt.
            completion = max(produced, int(self._llm.n_tokens) - len(prompt_tokens))
            yield Chunk(
                finish_reason=finish,
                usage=Usage(prompt_tokens=len(prompt_tokens), completion_tokens=completion),
            )

    def _decode(
        self,
        tokens: list[int],
        *,
        params: GenerationParams,
        should_stop: StopFlag,
        max_tokens: int,
        stop: list[str],
        grammar: Any = None,
        trigger: str = "",
    ) -> _Segment:
        stream = self._llm.create_completion(
            prompt=tokens,
            max_tokens=max_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            repeat_penalty=params.repetition_penalty,
            stop=stop,
            seed=params.seed,
            grammar=grammar,
            stream=True,
        )
        return _Segment(stream, should_stop=should_stop, trigger=trigger)

    @classmethod
    def constraint_check(cls, constraint: Constraint | None) -> None:
        """Also refuse what the grammar converter cannot take (a schema keyword it does not know, a
        pattern with look-around), where llama-cpp-python is installed: the web process refuses it
        before a reply is stored, instead of the worker failing the reply."""
        super().constraint_check(constraint)
        if constraint is None or importlib.util.find_spec("llama_cpp") is None:
            return
        try:
            gbnf_for(constraint)
        except ConstraintError as exc:
            raise ConstraintUnsupported(
                f"The {cls.label} backend cannot decode under {constraint.describe()}: {exc}"
            ) from None

    def _grammar(self, constraint: Constraint, *, call_opened: bool) -> Any:
        """The compiled grammar of ``constraint``, from a small LRU cache: converting a schema
        takes milliseconds, and a reply with a constraint usually repeats the last one."""
        key = json.dumps([constraint_to_json(constraint), call_opened], sort_keys=True)
        if key in self._grammars:
            self._grammars.move_to_end(key)
            return self._grammars[key]
        from llama_cpp import llama_cpp as capi
        from llama_cpp.llama_grammar import LlamaGrammar

        started = time.perf_counter()
        try:
            text = gbnf_for(constraint, call_opened=call_opened)
        except ConstraintError as exc:
            raise ConstraintUnsupported(
                f"The {self.label} backend cannot decode under {constraint.describe()}: {exc}"
            ) from None
        built = time.perf_counter()
        # llama-cpp-python hands the text to llama.cpp on every completion and adds a NULL sampler
        # (a crash) when it does not parse: parse it here once, where a refusal can be said.
        sampler = capi.llama_sampler_init_grammar(self._llm._model.vocab, text.encode("utf-8"), b"root")
        if not sampler:
            raise ConstraintUnsupported(
                f"The {self.label} backend cannot decode under {constraint.describe()}: "
                "llama.cpp does not accept the grammar made from it.",
                detail=text[:2000],
            )
        capi.llama_sampler_free(sampler)
        parsed = time.perf_counter()
        log.debug(
            "compiled a %s grammar: %d bytes of GBNF in %.1f ms, parsed by llama.cpp in %.1f ms",
            constraint.kind, len(text), (built - started) * 1000, (parsed - built) * 1000,
        )  # fmt: skip
        grammar = LlamaGrammar.from_string(text, verbose=False)
        self._grammars[key] = grammar
        if len(self._grammars) > GRAMMAR_CACHE_SIZE:
            self._grammars.popitem(last=False)
        return grammar

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


class _Segment:
    """The text of one completion, piece by piece. Once iterated, ``finish`` says why it ended
    ("trigger" when ``trigger`` appeared: the text then ends with it) and ``produced`` counts the
    pieces (about one a token)."""

    def __init__(self, stream: Any, *, should_stop: StopFlag, trigger: str) -> None:
        self._stream = stream
        self._should_stop = should_stop
        self._trigger = trigger
        self.finish = "stop"
        self.produced = 0

    def __iter__(self) -> Iterator[str]:
        seen = ""
        last_poll = 0.0
        try:
            for part in self._stream:
                choice = part["choices"][0]
                text = choice.get("text") or ""
                if text:
                    self.produced += 1
                    if self._trigger:
                        at = (seen + text).find(self._trigger, max(0, len(seen) - len(self._trigger) + 1))
                        if at >= 0:
                            self.finish = "trigger"
                            yield text[: at + len(self._trigger) - len(seen)]
                            return
                        seen += text
                    yield text
                if choice.get("finish_reason"):
                    self.finish = choice["finish_reason"]
                now = time.monotonic()
                if now - last_poll >= 0.05:
                    last_poll = now
                    if self._should_stop():
                        self.finish = "cancelled"
                        return
        finally:
            self._stream.close()
