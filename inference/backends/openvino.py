"""OpenVINO GenAI's ``LLMPipeline`` on an OpenVINO IR folder (CPU, Intel GPU or NPU).

The folder is what ``pipeline.convert`` (or ``optimum-cli export openvino``) writes: the model,
openvino-tokenizers' tokenizer and detokenizer, and the chat template in their metadata.

Streaming: ``LLMPipeline.generate`` blocks and reports text through a callback, so it runs in a
thread that feeds a queue, and ``stream_chat`` reads the queue. ``should_stop`` is polled in the
caller's thread (it may touch the caller's database connection); the callback only reads an
event and answers ``StreamingStatus.STOP``, which ends generation after the current token.

KV cache between turns (``kv_cache_reuse``, the default): ``generate`` takes the whole
conversation as a ``ChatHistory`` (openvino-genai 2025.4+; ``start_chat``/``finish_chat`` are
deprecated). The stateful pipeline keeps the KV cache of the conversation it last saw; when the
next history extends it (the next turn of the same session) only the new turn is computed. For
any other history (another session) it keeps at most the tokens both share, which is exact. So
the reuse follows the tokens rather than ``session_key`` and never serves one session another's
state; the lock makes the turns of different sessions take the cache in turn. With ``kv_cache_reuse`` off,
the backend renders the prompt itself and calls ``generate`` outside chat mode, which starts
every reply from an empty cache.

Constraints (``GenerationParams.constraint``) go on the generation config as a
``StructuredOutputConfig``, in both modes: XGrammar compiles it when ``generate`` starts and masks
every token that would leave the language. A JSON schema goes as ``json_schema`` (``{}``: any JSON
object), a regular expression as ``regex``, a choice as a union of constant strings (nothing to
escape, unlike a regex alternation), tool calls as structural tags in the generic format
(``inference.constraints``): calls only for ``required`` or a named tool, and for ``auto`` free text
until the model writes ``<tool_call>`` (a triggered tag, XGrammar's lazy grammar). A constraint that
XGrammar refuses (an unresolvable ``$ref``, a look-ahead in a pattern) fails before the first token
with ConstraintUnsupported. Stop strings are not applied under a constraint: one met inside a JSON
value would cut it short of its language (as on llama.cpp).

Compiled-model cache (``cache_dir``): a folder name under the data folder's ``openvino-cache/``,
never a path of its own choosing; an agent's options must not make a worker write anywhere else.
"""

from __future__ import annotations

import json
import queue
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path, PureWindowsPath
from typing import Any, Literal

from pydantic import Field, field_validator

from inference.backends.base import (
    Backend,
    BackendError,
    ChatMessage,
    CheckResult,
    Chunk,
    ConstraintUnsupported,
    GenerationParams,
    StopFlag,
    Usage,
    missing_package,
)
from inference.backends.options import BackendOptions
from inference.constraints import (
    TOOL_CALL_CLOSE,
    TOOL_CALL_OPEN,
    Choice,
    Constraint,
    JsonSchema,
    Regex,
    ToolCalls,
    openai_tools,
    structured_messages,
    template_knows_tools,
    tool_call_schema,
)

# How often the caller's should_stop() is polled while waiting for text.
_POLL_SECONDS = 0.05
_REQUIRED_FILES = ("openvino_model.xml", "openvino_tokenizer.xml", "openvino_detokenizer.xml")
# The folder under settings.DATA_DIR that holds every agent's compiled-model cache.
CACHE_FOLDER = "openvino-cache"
# XGrammar's refusals: "[03:27:25] /.../xgrammar-src/cpp/regex_converter.cc:75: Regex parsing error
# at position 3: Lookahead is not supported yet." (a failed check adds "Check failed: (...) is false: ").
_XGRAMMAR_ERROR = re.compile(r"xgrammar\S*:\d+: (?:Check failed: .*? is false: )?(?P<reason>.+)", re.S)


def _leaves_its_folder(name: str) -> bool:
    """Whether a relative name could lead anywhere but below the folder it is joined to."""
    return (
        name.startswith(("/", "\\"))
        or bool(PureWindowsPath(name).drive)
        or ".." in re.split(r"[\\/]", name)
        or "\x00" in name
    )


def cache_folder(name: str) -> Path:
    """The compiled-model cache folder ``name`` names, made under DATA_DIR/openvino-cache.

    Raises BackendError when it would lie anywhere else: an absolute path, ``..``, or a symbolic
    link inside the cache folder that leads out of it (the options were checked when saved; this
    holds for options saved before that check, and for a link made since).
    """
    from django.conf import settings

    root = (Path(settings.DATA_DIR) / CACHE_FOLDER).resolve()
    escapes = _leaves_its_folder(name)
    folder = root / name if escapes else (root / name).resolve()  # symbolic links followed
    if escapes or not folder.is_relative_to(root):
        raise BackendError(
            "The agent's OpenVINO option cache_dir leads out of its cache folder. "
            "An administrator can see the details.",
            detail=f"cache_dir {name!r} is not a folder inside {root}; name one there (e.g. gpu).",
        )
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class OpenVINOOptions(BackendOptions):
    device: Literal["CPU", "GPU", "NPU", "AUTO"] = Field("CPU", description="OpenVINO device.")
    cache_dir: str | None = Field(
        None,
        max_length=200,
        description=f"Folder for the compiled-model cache (speeds GPU/NPU loads): a name inside the data "
        f"folder's {CACHE_FOLDER}/, e.g. gpu.",
    )
    performance_hint: Literal["LATENCY", "THROUGHPUT"] | None = Field(None, description="OpenVINO performance hint.")
    kv_cache_reuse: bool = Field(True, description="Keep the KV cache between turns of the same session.")

    @field_validator("cache_dir")
    @classmethod
    def _inside_the_cache_folder(cls, value: str | None) -> str | None:
        if value and _leaves_its_folder(value):
            raise ValueError(f"name a folder inside the data folder's {CACHE_FOLDER}/: no absolute path, no '..'")
        return value


class OpenVINOBackend(Backend):
    name = "openvino"
    label = "OpenVINO GenAI"
    formats = frozenset({"openvino"})
    options_schema = OpenVINOOptions
    supports_stop = True
    supports_concurrent = False  # one pipeline, one KV cache: one sequence at a time
    counts_tokens = True
    reuses_kv_cache = True
    constraints = frozenset({"json_schema", "regex", "choice", "tools"})

    options: OpenVINOOptions

    def __init__(self, *, model_path: str, options: Any, api_key: str = "") -> None:
        super().__init__(model_path=model_path, options=options, api_key=api_key)
        self._genai: Any = None  # the openvino_genai module, imported in load()
        self._pipe: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()
        # Prompt tokens the last reply computed (the rest came from the KV cache); for benchmarks.
        self.last_prefill_tokens: int | None = None

    def load(self) -> None:
        # Before anything else: options that point outside the cache folder never reach the engine.
        cache = cache_folder(self.options.cache_dir) if self.options.cache_dir else None
        try:
            import openvino
            import openvino_genai
        except ImportError:
            raise missing_package("openvino-genai", "openvino") from None
        folder = Path(self.model_path)
        if not folder.is_dir():
            raise BackendError(f"OpenVINO IR folder not found on this worker: {folder}")
        missing = [name for name in _REQUIRED_FILES if not (folder / name).is_file()]
        if missing:
            raise BackendError(
                f"{folder} is not a complete OpenVINO IR folder (missing {', '.join(missing)}); "
                "export it with: manage.py export_openvino"
            )
        device = self.options.device
        available = list(openvino.Core().available_devices)
        if device != "AUTO" and not any(d.split(".")[0] == device for d in available):
            raise BackendError(
                f"OpenVINO device {device} is not available on this worker (it has: "
                f"{', '.join(available) or 'none'}); choose another device or run the agent elsewhere."
            )
        try:
            self._pipe = openvino_genai.LLMPipeline(str(folder), device, **self._properties(cache))
        except RuntimeError as exc:
            raise BackendError(f"OpenVINO could not load {folder} on {device}: {_reason(exc)}") from exc
        self._genai = openvino_genai
        self._tokenizer = self._pipe.get_tokenizer()
        if not self._tokenizer.chat_template:
            self.close()
            raise BackendError(f"{folder} has no chat template in its tokenizer")

    def _properties(self, cache: Path | None) -> dict[str, Any]:
        opts = self.options
        # The stateful (SDPA) pipeline: one KV cache holding one conversation, kept and aligned
        # by generate(ChatHistory), reporting how many prompt tokens it computed anew. The default
        # paged-attention pipeline is built for batches of sequences, which this backend never runs.
        props: dict[str, Any] = {"ATTENTION_BACKEND": "SDPA"}
        if cache is not None:
            props["CACHE_DIR"] = str(cache)
        if opts.performance_hint:
            props["PERFORMANCE_HINT"] = opts.performance_hint
        return props

    def _require(self) -> Any:
        if self._pipe is None:
            raise BackendError("model not loaded")
        return self._pipe

    @property
    def renders_tools(self) -> bool:  # type: ignore[override]
        """Whether the model's own chat template renders tools (Qwen2.5's, Hermes'): then it tells
        the model its tools and shows earlier calls and results; calls are still decoded in the
        ``<tool_call>`` format."""
        return template_knows_tools(self.chat_template())

    def _history(self, messages: list[ChatMessage], constraint: Constraint | None = None) -> Any:
        if isinstance(constraint, ToolCalls) and self.renders_tools:
            history = self._genai.ChatHistory(structured_messages(messages))
            history.set_tools(openai_tools(constraint))
            return history
        return self._genai.ChatHistory([{"role": m["role"], "content": m["content"]} for m in messages])

    def _render(self, messages: list[ChatMessage], constraint: Constraint | None = None) -> str:
        history = self._history(messages, constraint)
        prompt: str = self._tokenizer.apply_chat_template(history, add_generation_prompt=True)
        return prompt

    def _token_count(self, prompt: str) -> int:
        # The pipeline encodes a templated history without adding special tokens; so do we.
        return int(self._tokenizer.encode(prompt, add_special_tokens=False).input_ids.get_shape()[1])

    def count_tokens(self, messages: list[ChatMessage]) -> int:
        self._require()
        return self._token_count(self._render(messages))

    def chat_template(self) -> str:
        return str(self._tokenizer.chat_template or "") if self._tokenizer is not None else ""

    def context_length(self) -> int | None:
        try:
            config = json.loads((Path(self.model_path) / "config.json").read_text())
        except (OSError, ValueError):
            return None
        value = config.get("max_position_embeddings")
        return int(value) if isinstance(value, int) else None

    def memory_bytes(self) -> int:
        folder = Path(self.model_path)
        return sum(f.stat().st_size for f in folder.glob("*.bin")) if folder.is_dir() else 0

    def _generation_config(self, params: GenerationParams) -> Any:
        config = self._pipe.get_generation_config()  # keeps the model's eos / stop token ids
        config.max_new_tokens = params.max_tokens
        if params.temperature <= 0:
            config.do_sample = False
        else:
            config.do_sample = True
            config.temperature = params.temperature
            config.top_p = params.top_p
        config.repetition_penalty = params.repetition_penalty
        config.stop_strings = set(params.stop) if params.constraint is None else set()
        config.include_stop_str_in_output = False
        if params.seed is not None:
            config.rng_seed = params.seed
        if params.constraint is not None:
            config.structured_output_config = self._structured_output(params.constraint)
        return config

    def _structured_output(self, constraint: Constraint) -> Any:
        """The engine's form of ``constraint``; XGrammar compiles it when generation starts."""
        soc = self._genai.StructuredOutputConfig
        if isinstance(constraint, JsonSchema):
            return soc(json_schema=json.dumps(constraint.schema or {"type": "object"}))
        if isinstance(constraint, Regex):
            return soc(regex=constraint.pattern)
        if isinstance(constraint, Choice):
            options = [soc.ConstString(option) for option in constraint.options]
            return soc(structural_tags_config=options[0] if len(options) == 1 else soc.Union(*options))
        body = soc.JSONSchema(json.dumps(tool_call_schema(constraint)))
        call = soc.Tag(f"{TOOL_CALL_OPEN}\n", body, f"\n{TOOL_CALL_CLOSE}")
        tags: Any
        if constraint.mode == "auto":
            # Free text until the model opens a call; from there on, only a whole call.
            tags = soc.TriggeredTags([TOOL_CALL_OPEN], [call], stop_after_first=not constraint.parallel)
        elif constraint.parallel:
            tags = soc.TagsWithSeparator([call], "\n", at_least_one=True)
        else:
            tags = call
        return soc(structural_tags_config=tags)

    def stream_chat(
        self,
        messages: list[ChatMessage],
        params: GenerationParams,
        *,
        should_stop: StopFlag = lambda: False,
        session_key: str | None = None,
    ) -> Iterator[Chunk]:
        pipe = self._require()
        self.constraint_check(params.constraint)
        if not messages:
            raise BackendError("no messages to answer")
        prompt = self._render(messages, params.constraint)
        prompt_tokens = self._token_count(prompt)
        limit = self.context_length()
        if limit is not None and prompt_tokens >= limit:
            raise BackendError(f"The prompt takes {prompt_tokens} tokens; the model's context is {limit}.")
        config = self._generation_config(params)
        inputs: Any
        if self.options.kv_cache_reuse:
            inputs = self._history(messages, params.constraint)  # chat mode: the pipeline keeps its KV cache
        else:
            inputs = [prompt]  # plain mode, a fresh cache for every reply (a list: DecodedResults back)
            config.apply_chat_template = False
        genai = self._genai
        with self._lock:
            events: queue.Queue[tuple[str, Any]] = queue.Queue()
            halt = threading.Event()

            def on_text(text: str) -> Any:
                if text:
                    events.put(("text", text))
                return genai.StreamingStatus.STOP if halt.is_set() else genai.StreamingStatus.RUNNING

            def generate() -> None:
                try:
                    events.put(("done", pipe.generate(inputs, config, on_text)))
                except Exception as exc:  # reported to the reader's thread, where it is raised
                    events.put(("error", exc))

            worker = threading.Thread(target=generate, name="openvino-generate", daemon=True)
            worker.start()
            streamed: list[str] = []
            cancelled = False
            last_poll = 0.0
            try:
                while True:
                    try:
                        kind, value = events.get(timeout=_POLL_SECONDS)
                    except queue.Empty:
                        kind, value = "", None
                    now = time.monotonic()
                    if not cancelled and now - last_poll >= _POLL_SECONDS:
                        last_poll = now
                        if should_stop():
                            cancelled = True
                            halt.set()
                    if kind == "text":
                        streamed.append(value)
                        yield Chunk(text=value)
                    elif kind == "error":
                        raise self._failure(value, params.constraint, streamed=bool(streamed)) from value
                    elif kind == "done":
                        result = value
                        break
            finally:
                # Also reached when the reader walks away: stop the engine before letting go.
                halt.set()
                worker.join()
            text = result.texts[0] if result.texts else ""
            sent = "".join(streamed)
            if text.startswith(sent) and len(text) > len(sent):
                # Text the streamer still held when generation ended (a partial UTF-8 sequence).
                yield Chunk(text=text[len(sent) :])
            metrics = result.perf_metrics
            completion = int(metrics.get_num_generated_tokens())
            self.last_prefill_tokens = int(metrics.get_num_input_tokens())
            if cancelled:
                finish = "cancelled"
            elif completion >= params.max_tokens:
                finish = "length"
            else:
                finish = "stop"
            yield Chunk(
                finish_reason=finish,
                usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=completion),
            )

    def _failure(self, exc: BaseException, constraint: Constraint | None, *, streamed: bool) -> BackendError:
        """The error to raise for an exception of ``generate``: XGrammar refusing the constraint
        (raised as it compiles, before the first token) says which constraint and why."""
        refusal = _XGRAMMAR_ERROR.search(str(exc)) if constraint is not None and not streamed else None
        if constraint is not None and refusal is not None:
            return ConstraintUnsupported(
                f"The {self.label} backend cannot decode under {constraint.describe()}: "
                f"{_shortened(refusal['reason'])}",
                detail=str(exc),
            )
        return BackendError(f"OpenVINO generation failed: {_reason(exc)}")

    def close(self) -> None:
        # A generate thread still running keeps its own reference; the pipeline goes with it.
        self._pipe = None
        self._tokenizer = None

    @classmethod
    def check(cls) -> CheckResult:
        try:
            import openvino
            import openvino_genai
        except ImportError:
            return CheckResult(False, str(missing_package("openvino-genai", "openvino")))
        try:
            devices = list(openvino.Core().available_devices)
        except RuntimeError as exc:
            return CheckResult(False, f"OpenVINO found no devices: {_reason(exc)}")
        version = getattr(openvino_genai, "__version__", None) or openvino_genai.get_version()
        if not devices:
            return CheckResult(False, f"openvino-genai {version}; OpenVINO lists no devices")
        return CheckResult(True, f"openvino-genai {version}; devices: {', '.join(devices)}")


def _shortened(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _reason(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    # OpenVINO's messages start with the C++ source location; the reason is the last line.
    return lines[-1] if lines else type(exc).__name__
