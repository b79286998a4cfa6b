"""Any server that speaks OpenAI's ``/v1/chat/completions``, through the official ``openai`` client.

The model lives on the server (llama.cpp's server, ``vllm serve``, a hosted API), so ``load()``
only builds a client and asks the server which models it serves. There is no local tokenizer:
``count_tokens`` is an estimate, and ``usage`` is the server's own when it sends one.

A constraint goes to the server in OpenAI's own fields (``openai_constraints.openai_fields``): a
JSON schema, or a choice as a string enum, in ``response_format``; tool calls in ``tools`` and
``tool_choice``. The server decodes under it, or refuses the request. The answer comes back as
every backend's does: the bare option, calls in the generic ``<tool_call>`` format. OpenAI's API
has no regular expressions: those are refused before any request.

The worker connects only where ``OUTBOUND_ALLOWED_HOSTS`` allows (``inference.outbound``). A
failed reply's message is read by every user of the agent, so it never quotes the server: its
address and its own error text go to ``BackendError.detail``, for administrators.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from pydantic import Field, HttpUrl

from inference.backends.base import (
    Backend,
    BackendError,
    BackendUnavailable,
    ChatMessage,
    CheckResult,
    Chunk,
    GenerationParams,
    StopFlag,
    Usage,
)
from inference.backends.openai_constraints import NotAString, SchemaStyle, StringUnwrap, ToolCallJoin, openai_fields
from inference.backends.options import BackendOptions
from inference.constraints import Choice
from inference.outbound import OutboundRefused, proxied, url_check
from inference.reasoning import THINK_CLOSE, THINK_OPEN

log = logging.getLogger(__name__)

# Estimated tokens a chat template adds around each message (<|im_start|>role\n ... <|im_end|>\n)
# and before the reply (<|im_start|>assistant\n).
_PER_MESSAGE_OVERHEAD = 5
_REPLY_PRIMING = 3
# One retry rides out a dropped keep-alive connection; more would keep a person waiting behind a
# server that is down, and the caller learns from ``retryable`` whether to try again later.
_MAX_RETRIES = 1
# A server that does not accept the connection within this many seconds is not coming.
_CONNECT_TIMEOUT = 10.0
# Statuses after which the same request can succeed later: timeout, busy, server-side failure.
_RETRYABLE_STATUSES = frozenset({408, 429})
_MAX_ERROR_TEXT = 500
# What users are told to expect when the server's own words are kept for administrators.
_SEE_DETAILS = "An administrator can see the details."


def estimate_tokens(messages: list[ChatMessage]) -> int:
    """An estimate, not a count: a third of each message's UTF-8 bytes, plus the template's marks.

    English runs about 4 bytes a token on common tokenizers, so this overcounts it by about a
    third on purpose: an estimate that falls short lets the prompt overflow the server's context
    window, and the reply fails, while one that runs over only drops history a little early.
    Bytes rather than characters keep non-Latin scripts (a CJK character is 3 bytes and about a
    token) from falling far short. Code and small-vocabulary models still can: see the tests.
    """
    total = _REPLY_PRIMING
    for message in messages:
        size = len(message.get("content", "").encode("utf-8"))
        total += _PER_MESSAGE_OVERHEAD + -(-size // 3)
    return total


class OpenAICompatOptions(BackendOptions):
    base_url: HttpUrl = Field(description="Server root ending in /v1, e.g. http://127.0.0.1:8080/v1.")
    model: str = Field("", max_length=200, description="Model name the server knows; default: its first.")
    timeout: float = Field(120.0, gt=0, le=3600, description="Seconds to wait for the server.")
    extra_body: dict[str, object] = Field(
        default_factory=dict, description="Extra fields sent with every request (top_k, min_p, ...)."
    )
    schema_style: SchemaStyle = Field(
        "openai",
        description="How the server takes a JSON schema: OpenAI's response_format json_schema (OpenAI, vLLM, "
        "llama.cpp's llama-server, Ollama) or llama-cpp-python's json_object with a schema.",
    )


class OpenAICompatBackend(Backend):
    name = "openai_compat"
    label = "OpenAI-compatible server"
    formats = frozenset({"served", "gguf", "hf", "openvino"})
    options_schema = OpenAICompatOptions
    supports_stop = True
    supports_concurrent = True  # one HTTP client serves many replies at once
    counts_tokens = False  # no tokenizer here: count_tokens() estimates
    reuses_kv_cache = False  # whatever prefix caching the server does is its own business
    # Passed through to the server in OpenAI's fields; OpenAI's API has no regular expressions.
    constraints = frozenset({"json_schema", "choice", "tools"})
    renders_tools = True  # the server's chat template tells the model its tools

    options: OpenAICompatOptions

    @classmethod
    def needs_artifact(cls, options: Any) -> bool:
        return False  # base_url says where the model is

    @classmethod
    def outbound_urls(cls, options: Any) -> dict[str, str]:
        return {"base_url": str(options.base_url)}

    def __init__(self, *, model_path: str, options: Any, api_key: str = "", own_server: bool = False) -> None:
        """``own_server``: the URL is of a server this worker started (hosted vLLM on loopback), not
        one an agent names, so OUTBOUND_ALLOWED_HOSTS does not apply to it."""
        super().__init__(model_path=model_path, options=options, api_key=api_key)
        self._own_server = own_server
        self._client: Any = None
        self._model: str = options.model
        self._context: int | None = None

    @classmethod
    def cache_key(cls, *, model_path: str, options: Any, api_key: str = "") -> tuple[Any, ...]:
        # The server is the model: a local path plays no part in which client serves a reply.
        return (cls.name, str(options.base_url), options.model, api_key, options.model_dump_json())

    @property
    def base_url(self) -> str:
        return str(self.options.base_url)

    @property
    def model(self) -> str:
        """The model name requests carry (the server's first one when the options name none)."""
        return self._model

    def load(self) -> None:
        try:
            import openai
        except ImportError:
            raise BackendUnavailable(
                "The openai package is not installed in this worker's environment; it is a core "
                "dependency: pip install -e ."
            ) from None
        timeout = self.options.timeout
        http_client = None
        if not self._own_server:
            # Here, with this worker's DNS. The guarded client checks every connection again, unless
            # a proxy from the environment connects in its place (and resolves the name itself).
            url_check(self.base_url)
            if not proxied(self.base_url):
                from inference.outbound_http import guarded_client

                http_client = guarded_client()
        client = openai.OpenAI(
            # The client refuses to start without a key; servers without auth ignore this one.
            api_key=self.api_key or "none",
            base_url=self.base_url,
            timeout=openai.Timeout(timeout, connect=min(_CONNECT_TIMEOUT, timeout)),
            max_retries=_MAX_RETRIES,
            http_client=http_client,
        )
        try:
            models = list(client.models.list())
        except openai.APIStatusError as exc:
            if not self._model:
                client.close()
                raise self._error(exc, "listing its models") from exc
            # A server may serve a named model without listing it; the first request will tell.
            models = []
            log.info("%s: listing models failed (%s); using %r", self.base_url, exc, self._model)
        except openai.OpenAIError as exc:
            client.close()
            raise self._error(exc, "listing its models") from exc
        if not self._model:
            if not models:
                client.close()
                raise BackendError(
                    "The model server lists no models; name one in the agent's 'model' option.",
                    detail=f"The server at {self.base_url} lists no models.",
                )
            self._model = models[0].id
        listed = next((m for m in models if m.id == self._model), None)
        if models and listed is None:
            # llama.cpp's server answers any name with its default model; vLLM answers 404.
            log.warning(
                "%s does not list model %r (it lists %s)",
                self.base_url,
                self._model,
                ", ".join(m.id for m in models),
            )
        if listed is not None:
            # vLLM reports its context window here; most servers say nothing.
            max_len = (listed.model_extra or {}).get("max_model_len")
            self._context = max_len if isinstance(max_len, int) and max_len > 0 else None
        self._client = client

    def count_tokens(self, messages: list[ChatMessage]) -> int:
        return estimate_tokens(messages)

    def context_length(self) -> int | None:
        return self._context

    def stream_chat(
        self,
        messages: list[ChatMessage],
        params: GenerationParams,
        *,
        should_stop: StopFlag = lambda: False,
        session_key: str | None = None,
    ) -> Iterator[Chunk]:
        if self._client is None:
            raise BackendError("model not loaded")
        import openai

        constraint = params.constraint
        self.constraint_check(constraint)
        if should_stop():
            yield Chunk(
                finish_reason="cancelled", usage=Usage(prompt_tokens=self.count_tokens(messages), completion_tokens=0)
            )
            return
        # repetition_penalty is no OpenAI field (vLLM and others take it; OpenAI's own API answers
        # 400): sent only when it does something.
        penalty = {"repetition_penalty": params.repetition_penalty} if params.repetition_penalty != 1.0 else {}
        extra: dict[str, Any] = {**penalty, **self.options.extra_body, **params.extra}
        if constraint is not None:
            extra.update(openai_fields(constraint, style=self.options.schema_style))
        # A seed in the options is the agent's default; one in the request wins over it.
        default_seed = extra.pop("seed", None)
        seed = params.seed if params.seed is not None else default_seed
        try:
            stream = self._client.chat.completions.create(
                model=self._model,
                messages=messages,
                stream=True,
                stream_options={"include_usage": True},
                max_tokens=params.max_tokens,
                temperature=params.temperature,
                top_p=params.top_p,
                stop=list(params.stop) if params.stop else openai.omit,
                seed=seed if seed is not None else openai.omit,
                extra_body=extra,
            )
        except openai.OpenAIError as exc:
            raise self._error(exc, "starting the reply") from exc
        events = deltas = 0
        finish: str | None = None
        usage: Usage | None = None
        # A choice comes as a JSON string (a schema's enum): the caller reads the bare option.
        unwrap = StringUnwrap() if isinstance(constraint, Choice) else None
        # Tool calls come as pieces of delta.tool_calls: the caller reads whole calls as text.
        calls = ToolCallJoin()
        written = False  # calls after text go on a line of their own
        thinking = False  # inside reasoning the server sent apart
        try:
            for event in stream:
                events += 1
                if event.usage is not None:
                    usage = Usage(
                        prompt_tokens=event.usage.prompt_tokens,
                        completion_tokens=event.usage.completion_tokens,
                    )
                for choice in event.choices:
                    delta = choice.delta
                    text = delta.content if delta is not None else None
                    # A server that parses a reasoning model's thinking (vLLM with a reasoning parser,
                    # DeepSeek) sends it apart: passed on in tags, which the worker splits off again.
                    reasoning = _reasoning_of(delta)
                    if reasoning:
                        deltas += 1
                        yield Chunk(text=reasoning if thinking else THINK_OPEN + reasoning)
                        thinking = True
                    if text and thinking:
                        text, thinking = THINK_CLOSE + text, False
                    if text:
                        deltas += 1
                        piece = unwrap.feed(text) if unwrap is not None else text
                        if piece:
                            written = True
                            yield Chunk(text=piece)
                    if delta is not None and delta.tool_calls:
                        deltas += 1
                        for call in calls.feed(delta.tool_calls):
                            yield Chunk(text=f"\n{call}" if written else call)
                            written = True
                    if choice.finish_reason:
                        finish = choice.finish_reason
                # Past the finish reason only the usage event is left: no stop can cut that short.
                if finish is None and should_stop():
                    finish = "cancelled"
                    break
        except openai.OpenAIError as exc:
            raise self._error(exc, "streaming the reply") from exc
        except NotAString as exc:
            raise BackendError(
                "The model server did not hold its answer to the choice (it may not support "
                "response_format json_schema). " + _SEE_DETAILS,
                detail=f"The server at {self.base_url} answered a choice with no JSON string: {exc}",
            ) from exc
        finally:
            # Closing the response drops the connection: the server sees the client gone and
            # stops generating.
            stream.close()
        for call in calls.end():
            yield Chunk(text=f"\n{call}" if written else call)
            written = True
        if finish is None:
            raise self._unfinished(events, deltas, messages)
        if usage is None or finish == "cancelled":
            # The server sent no usage (llama.cpp's server ignores stream_options; a stopped
            # stream never gets one): the prompt is estimated, and servers stream about one
            # token per delta, so the deltas stand in for the completion tokens.
            usage = Usage(prompt_tokens=self.count_tokens(messages), completion_tokens=deltas)
        yield Chunk(finish_reason=finish, usage=usage)

    def _unfinished(self, events: int, deltas: int, messages: list[ChatMessage]) -> BackendError:
        """A stream that ended without a finish reason, explained as far as the server allows."""
        where = "The model server"
        detail = f"The server at {self.base_url}"
        if events == 0:
            # llama.cpp's server answers a streamed request it refuses once generation starts (a
            # prompt past its context window) with an empty 200 response; the reason is only in
            # its log. The same request would fail the same way.
            return BackendError(
                f"{where} answered with an empty stream and gave no reason. The prompt (about "
                f"{self.count_tokens(messages)} tokens, estimated) may exceed the server's context "
                "window: compare the agent's context window with the server's, or see its log.",
                detail=detail,
            )
        # llama.cpp's server ends a stream with [DONE] and no finish reason when a newer request
        # interrupts it (its interrupt_requests setting); asking again can succeed.
        return BackendError(
            f"{where} ended the reply without a finish reason after {deltas} pieces; another "
            "request may have interrupted it.",
            retryable=True,
            detail=detail,
        )

    def _error(self, exc: Exception, doing: str) -> BackendError:
        """The openai client's error as one a person can act on, saying whether a retry helps.

        The message names no address and quotes nothing the server said: every user of the agent
        reads it. ``detail`` has both, for the worker's log.
        """
        import openai

        where = f"The server at {self.base_url}"
        if isinstance(exc.__cause__, OutboundRefused):
            return exc.__cause__  # the transport refused the address (a name that now resolves elsewhere)
        if isinstance(exc, openai.APITimeoutError):
            return BackendError(
                f"Timed out {doing}: the model server did not answer within {self.options.timeout:g} s.",
                retryable=True,
                detail=f"{where} did not answer within {self.options.timeout:g} s.",
            )
        if isinstance(exc, openai.APIConnectionError):
            cause = f" ({exc.__cause__})" if exc.__cause__ else ""
            return BackendError(
                f"Cannot reach the model server while {doing}. {_SEE_DETAILS}",
                retryable=True,
                detail=f"Cannot reach the server at {self.base_url}{cause}. Is it running, and is base_url right?",
            )
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            text = _server_text(exc.body) or exc.message
            detail = f"{where} answered HTTP {status} while {doing}: {text}"
            if status >= 500 or status in _RETRYABLE_STATUSES:
                return BackendError(
                    f"The model server answered an error (HTTP {status}) while {doing}. {_SEE_DETAILS}",
                    retryable=True,
                    detail=detail,
                )
            if status in (401, 403):
                return BackendError(
                    f"The model server refused the agent's API key (HTTP {status}). {_SEE_DETAILS}", detail=detail
                )
            if status == 404 and not self.base_url.rstrip("/").endswith("/v1"):
                detail += " (base_url usually ends in /v1)"
            return BackendError(
                f"The model server rejected the request (HTTP {status}) while {doing}. {_SEE_DETAILS}", detail=detail
            )
        # An error event inside an accepted stream: the server failed partway, not the request.
        return BackendError(
            f"The model server failed while {doing}. {_SEE_DETAILS}", retryable=True, detail=f"{where}: {exc}"
        )

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    @classmethod
    def check(cls) -> CheckResult:
        try:
            import openai
        except ImportError:
            return CheckResult(False, "The openai package is not installed: pip install -e .")
        return CheckResult(True, f"openai {openai.__version__}")


def _server_text(body: object) -> str:
    """The server's own words from an error body: OpenAI's ``message`` or FastAPI's ``detail``."""
    if body is None:
        return ""
    if isinstance(body, dict):
        message = body.get("message")
        if isinstance(message, str) and message:
            return message[:_MAX_ERROR_TEXT]
        detail = body.get("detail")
        if isinstance(detail, list):
            parts = []
            for item in detail:
                if isinstance(item, dict):
                    loc = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
                    parts.append(f"{loc}: {item.get('msg', '')}" if loc else str(item.get("msg", "")))
            return "; ".join(parts)[:_MAX_ERROR_TEXT]
        if detail:
            return str(detail)[:_MAX_ERROR_TEXT]
    return str(body)[:_MAX_ERROR_TEXT]


def _reasoning_of(delta: Any) -> str:
    """A delta's thinking, under either name servers use (``reasoning_content``: vLLM before 0.10
    and DeepSeek; ``reasoning``: vLLM since)."""
    if delta is None:
        return ""
    extra = delta.model_extra or {}
    value = extra.get("reasoning_content") or extra.get("reasoning") or getattr(delta, "reasoning_content", None)
    return value if isinstance(value, str) else ""
