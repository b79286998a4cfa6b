"""The ways a benchmark reaches a model, each timing one request as its client sees it.

``OpenAIDoor``: any OpenAI-compatible server with the official ``openai`` client: the platform's
``/v1``, llama-cpp-python's own server, ``vllm serve``. ``WebsocketDoor``: the platform's websocket,
as the web page uses it (a fresh session per request, opened before the clock starts, so each
prompt is alone in its context). ``LlamaInProcess``: llama-cpp-python in this process, the engine
with nothing around it (one request at a time). ``OpenVINOInProcess``: openvino-genai's
``LLMPipeline`` likewise.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipeline.bench.stats import RequestResult

SYSTEM = "You are a helpful assistant."


@dataclass
class Sampling:
    """What every door asks for: greedy, so all sides write the same text."""

    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    system: str = SYSTEM

    def messages(self, prompt: str) -> list[dict[str, str]]:
        return [{"role": "system", "content": self.system}, {"role": "user", "content": prompt}]


@dataclass
class Door:
    target: str
    label: str
    sampling: Sampling
    # The most requests it serves at once (None: as many as asked); the sweep skips higher levels.
    max_concurrency: int | None = None

    async def request(self, prompt: str) -> RequestResult:
        raise NotImplementedError

    async def close(self) -> None:
        return None


@dataclass
class OpenAIDoor(Door):
    base_url: str = ""
    api_key: str = "unused"
    model: str = ""
    extra_body: dict[str, Any] = field(default_factory=dict)
    # The prompt's tokens (chat template included) when the server reports no usage, as
    # llama-cpp-python's server does not (it sends one chunk per token).
    count: Callable[[str], int] | None = None
    _client: Any = None

    def client(self) -> Any:
        if self._client is None:
            import httpx2  # the HTTP client the openai package is built on
            from openai import AsyncOpenAI, DefaultAsyncHttpxClient

            limits = httpx2.Limits(max_connections=512, max_keepalive_connections=512)
            self._client = AsyncOpenAI(
                base_url=self.base_url, api_key=self.api_key, max_retries=0, timeout=3600,
                http_client=DefaultAsyncHttpxClient(timeout=3600, limits=limits),
            )  # fmt: skip
        return self._client

    async def request(self, prompt: str) -> RequestResult:
        client = self.client()
        if not self.model:
            self.model = (await client.models.list()).data[0].id
        result = RequestResult(start=time.perf_counter())
        usage = None
        pieces = 0
        try:
            stream = await client.chat.completions.create(
                model=self.model, messages=self.sampling.messages(prompt), stream=True,
                max_tokens=self.sampling.max_tokens, temperature=self.sampling.temperature, top_p=self.sampling.top_p,
                stream_options={"include_usage": True}, extra_body=self.extra_body or None,
            )  # fmt: skip
            async for chunk in stream:
                now = time.perf_counter()
                if chunk.choices and chunk.choices[0].delta.content:
                    result.piece(now, chunk.choices[0].delta.content)
                    pieces += 1
                if getattr(chunk, "usage", None):
                    usage = chunk.usage
            result.end = time.perf_counter()
            if usage is not None:
                result.prompt_tokens, result.output_tokens = usage.prompt_tokens, usage.completion_tokens
            else:
                result.output_tokens = pieces
                result.prompt_tokens = self.count(prompt) if self.count else 0
            result.ok = result.first is not None
            result.error = "" if result.ok else "no text came back"
        except Exception as exc:
            result.end, result.error = time.perf_counter(), f"{type(exc).__name__}: {exc}"[:300]
        return result

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()


@dataclass
class WebsocketDoor(Door):
    base_url: str = ""  # http(s)://host:port of the platform
    token: str = ""
    agent: str = ""

    def _api(self, method: str, path: str, body: Any = None) -> Any:
        import urllib.request

        request = urllib.request.Request(
            self.base_url + path, method=method, data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Token {self.token}", "Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read() or b"null")

    async def request(self, prompt: str) -> RequestResult:
        from websockets.asyncio.client import connect

        try:
            session = await asyncio.to_thread(
                self._api, "POST", "/api/sessions/", {"agent": self.agent, "title": "benchmark"}
            )
        except Exception as exc:
            return RequestResult(start=time.perf_counter(), end=time.perf_counter(), error=f"session: {exc}"[:300])
        ws_url = self.base_url.replace("http", "ws", 1) + f"/ws/sessions/{session['id']}/"
        client_id = uuid.uuid4().hex
        try:
            async with connect(
                ws_url, additional_headers={"Authorization": f"Token {self.token}"}, max_size=2**24, open_timeout=60
            ) as ws:
                await ws.recv()  # the snapshot
                result = RequestResult(start=time.perf_counter())
                await ws.send(json.dumps({
                    "type": "message", "content": prompt, "client_id": client_id,
                    "params": {"max_tokens": self.sampling.max_tokens, "temperature": self.sampling.temperature,
                               "top_p": self.sampling.top_p, "repetition_penalty": self.sampling.repetition_penalty,
                               "system_prompt": self.sampling.system},
                }))  # fmt: skip
                reply_id = None
                async for raw in ws:
                    now = time.perf_counter()
                    event = json.loads(raw)
                    kind = event.get("type")
                    if kind == "message" and event["message"]["role"] == "assistant" and reply_id is None:
                        reply_id = event["message"]["id"]
                    elif kind == "delta" and event["message_id"] == reply_id:
                        result.piece(now, event["text"])
                    elif kind == "done" and event["message_id"] == reply_id:
                        result.end = now
                        stats = event.get("stats") or {}
                        result.prompt_tokens = stats.get("prompt_tokens") or 0
                        result.output_tokens = stats.get("completion_tokens") or 0
                        result.ok = event["status"] == "complete" and result.first is not None
                        result.error = "" if result.ok else f"{event['status']}: {event.get('error') or ''}"[:300]
                        break
                    elif kind == "error":
                        result.end, result.error = now, f"{event.get('code')}: {event.get('message')}"[:300]
                        break
        except Exception as exc:
            result = RequestResult(
                start=time.perf_counter(), end=time.perf_counter(), error=f"{type(exc).__name__}: {exc}"[:300]
            )
        finally:
            try:
                await asyncio.to_thread(self._api, "DELETE", f"/api/sessions/{session['id']}/")
            except Exception:  # noqa: S110 - the session is only clutter
                pass
        return result


class _Threaded(Door):
    """An engine in this process: one request at a time, timed in the engine's own thread."""

    _lock = threading.Lock()

    async def request(self, prompt: str) -> RequestResult:
        return await asyncio.to_thread(self._locked, prompt)

    def _locked(self, prompt: str) -> RequestResult:
        with self._lock:
            result = RequestResult(start=time.perf_counter())
            try:
                self.generate(prompt, result)
                result.end = time.perf_counter()
                result.ok = result.first is not None
                result.error = "" if result.ok else "no text came back"
            except Exception as exc:
                result.end, result.error = time.perf_counter(), f"{type(exc).__name__}: {exc}"[:300]
            return result

    def generate(self, prompt: str, result: RequestResult) -> None:
        raise NotImplementedError


@dataclass
class LlamaInProcess(_Threaded):
    """llama-cpp-python on the GGUF: the GGUF's chat template rendered by llama-cpp-python's own
    formatter, then ``create_completion`` streamed token by token."""

    llm: Any = None
    formatter: Any = None

    @classmethod
    def load(cls, path: str, sampling: Sampling, *, n_threads: int | None, n_ctx: int) -> LlamaInProcess:
        from inference.llama_runtime import llama_load

        llm = llama_load(model_path=path, n_ctx=n_ctx, n_threads=n_threads, verbose=False)
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = llm.metadata.get("tokenizer.chat_template", "")
        eos = llm.detokenize([llm.token_eos()], special=True).decode("utf-8", "replace")
        bos = llm.detokenize([llm.token_bos()], special=True).decode("utf-8", "replace")
        formatter = Jinja2ChatFormatter(
            template=template, eos_token=eos, bos_token=bos, stop_token_ids=[llm.token_eos()]
        )
        return cls(target="raw_inprocess", label="llama-cpp-python in process", sampling=sampling,
                   max_concurrency=1, llm=llm, formatter=formatter)  # fmt: skip

    def count(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode(), add_bos=False, special=True))

    def count_prompt(self, prompt: str) -> int:
        """The tokens of the whole chat prompt for this user message (template included)."""
        rendered = self.formatter(messages=self.sampling.messages(prompt)).prompt
        return self.count(rendered)

    def generate(self, prompt: str, result: RequestResult) -> None:
        formatted = self.formatter(messages=self.sampling.messages(prompt))
        rendered = formatted.prompt
        stop = formatted.stop if isinstance(formatted.stop, list) else [formatted.stop] if formatted.stop else []
        tokens = self.llm.tokenize(rendered.encode(), add_bos=False, special=True)
        result.prompt_tokens = len(tokens)
        for chunk in self.llm.create_completion(
            prompt=tokens, max_tokens=self.sampling.max_tokens, temperature=self.sampling.temperature,
            top_p=self.sampling.top_p, repeat_penalty=self.sampling.repetition_penalty, stop=stop, stream=True,
        ):  # fmt: skip
            now = time.perf_counter()
            text = chunk["choices"][0]["text"]
            if text:
                result.piece(now, text)
                result.output_tokens += 1


@dataclass
class OpenVINOInProcess(_Threaded):
    """openvino-genai's LLMPipeline on the IR folder, its chat template applied, streamed."""

    pipe: Any = None

    @classmethod
    def load(cls, path: str, sampling: Sampling) -> OpenVINOInProcess:
        import openvino_genai

        pipe = openvino_genai.LLMPipeline(path, "CPU")
        return cls(target="raw_inprocess", label="openvino-genai in process", sampling=sampling,
                   max_concurrency=1, pipe=pipe)  # fmt: skip

    def generate(self, prompt: str, result: RequestResult) -> None:
        import openvino_genai

        tokenizer = self.pipe.get_tokenizer()
        rendered = tokenizer.apply_chat_template(self.sampling.messages(prompt), add_generation_prompt=True)
        result.prompt_tokens = int(tokenizer.encode(rendered, add_special_tokens=False).input_ids.get_shape()[1])
        config = openvino_genai.GenerationConfig()
        config.max_new_tokens = self.sampling.max_tokens
        config.apply_chat_template = False

        def streamer(text: str) -> openvino_genai.StreamingStatus:
            result.piece(time.perf_counter(), text)
            return openvino_genai.StreamingStatus.RUNNING

        out = self.pipe.generate(rendered, config, streamer)
        metrics = getattr(out, "perf_metrics", None)
        result.output_tokens = int(metrics.get_num_generated_tokens()) if metrics is not None else len(result.chunks)
