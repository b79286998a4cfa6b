"""The openai_compat backend, and vLLM's external mode on top of it, against a real server.

The server is llama-cpp-python's own OpenAI-compatible one serving the bundled GGUF, started once
for this module. What that server really does, where it matters here:

- it ignores ``stream_options``, so streamed replies carry no usage: the backend counts;
- a streamed request it refuses (a prompt past its context window) gets an empty 200 response,
  the reason only in its log;
- it answers any model name with its default model rather than a 404;
- it reports a field out of range as HTTP 500 (pydantic's text), not 400/422;
- it ignores unknown body fields (``repetition_penalty``: its own is ``repeat_penalty``) but
  validates known ones, so vLLM's ``top_k=-1`` ("off") is an error there;
- it refuses OpenAI's ``response_format`` type ``json_schema`` and reads a schema beside
  ``json_object`` instead (the option ``schema_style: llama-cpp-python``); it honours a named
  ``tool_choice`` and streams the call as ``delta.tool_calls``.

What no local server shows (the exact body sent, parallel tool calls) is read off a scripted
stand-in (tests/inference/scripted_server.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from inference.backends.base import BackendError, Chunk, ConstraintUnsupported, GenerationParams
from inference.backends.openai_compat import OpenAICompatBackend
from inference.backends.registry import OptionsError, options_validate
from inference.backends.vllm import VLLMBackend
from inference.bundled import bundled_model_path
from inference.children import free_port
from inference.constraints import (
    TOOL_CALL_OPEN,
    Choice,
    JsonSchema,
    Regex,
    Tool,
    ToolCalls,
    json_schema_check,
    tool_calls_parse,
)
from inference.reasoning import ThinkSplitter
from tests.inference.scripted_server import Script, content, scripted_server, tool_piece

SERVER_START_SECONDS = 180
SERVER_KEY = "sk-test-key-for-the-keyed-server"
# With no system prompt the greedy answer is a coin toss between CPU kernels (the first token's
# logits nearly tie: "L'Étoile, ..." on every variant in process, Paris on some servers); with
# this one every llama.cpp variant answers "The capital of France is Paris."
QUESTION = [
    {"role": "system", "content": "Answer in one short sentence."},
    {"role": "user", "content": "What is the capital of France?"},
]
STORY = [{"role": "user", "content": "Write a very long story about a dragon and a knight."}]
GREEDY = GenerationParams(max_tokens=48, temperature=0.0, seed=0)


def _wait_until_serving(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:]
            pytest.fail(f"llama.cpp's server exited with {proc.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers, if only to refuse a request without a key
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    pytest.fail(f"llama.cpp's server did not answer {url} within {SERVER_START_SECONDS} s")


@contextmanager
def _llama_cpp_server(folder: Path, *options: str) -> Iterator[str]:
    """llama-cpp-python's OpenAI-compatible server on the bundled GGUF; yields its /v1 URL."""
    port = free_port()
    log = folder / "server.log"
    command = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(bundled_model_path()),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--n_ctx", "2048",
        # Queue a second request instead of cutting off the running stream.
        "--interrupt_requests", "False",
        *options,
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_until_serving(f"http://127.0.0.1:{port}/v1/models", proc, log)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with _llama_cpp_server(tmp_path_factory.mktemp("llama-server")) as url:
        yield url


@pytest.fixture(scope="module")
def keyed_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with _llama_cpp_server(tmp_path_factory.mktemp("keyed-server"), "--api_key", SERVER_KEY) as url:
        yield url


def _compat(url: str, api_key: str = "", **options: Any) -> OpenAICompatBackend:
    opts = options_validate("openai_compat", {"base_url": url, **options})
    return OpenAICompatBackend(model_path="", options=opts, api_key=api_key)


@pytest.fixture(scope="module")
def backend(server_url: str) -> Iterator[OpenAICompatBackend]:
    loaded = _compat(server_url)
    loaded.load()
    yield loaded
    loaded.close()


def _reply(chunks: Iterator[Chunk]) -> tuple[str, Chunk, list[Chunk]]:
    """The reply's text, its final chunk, and every chunk."""
    every = list(chunks)
    finals = [c for c in every if c.finish_reason is not None]
    assert len(finals) == 1 and every[-1] is finals[0], "exactly one final chunk, and it is last"
    return "".join(c.text for c in every), finals[0], every


@pytest.mark.slow
def test_a_greedy_answer_to_the_capital_of_france_names_paris(
    backend: OpenAICompatBackend,
) -> None:
    text, final, _ = _reply(backend.stream_chat(QUESTION, GREEDY))
    assert "Paris" in text
    assert final.finish_reason in ("stop", "length")


@pytest.mark.slow
def test_with_no_model_named_the_backend_uses_the_servers_first(backend: OpenAICompatBackend, server_url: str) -> None:
    with urllib.request.urlopen(f"{server_url}/models", timeout=5) as response:
        served = response.read().decode()
    assert backend.model and f'"{backend.model}"' in served


@pytest.mark.slow
def test_streamed_pieces_make_the_reply_and_one_final_chunk_carries_the_usage(
    backend: OpenAICompatBackend,
) -> None:
    text, final, every = _reply(backend.stream_chat(QUESTION, GREEDY))
    pieces = every[:-1]
    assert pieces and all(c.text and c.finish_reason is None and c.usage is None for c in pieces)
    assert final.text == "" and text == "".join(c.text for c in pieces)
    assert final.usage is not None
    assert final.usage.prompt_tokens > 0 and final.usage.completion_tokens > 0
    # llama.cpp's server sends no usage in a stream, so the pieces are the count.
    assert final.usage.completion_tokens == len(pieces)


@pytest.mark.slow
def test_max_tokens_cuts_the_reply_short_with_length(backend: OpenAICompatBackend) -> None:
    params = GenerationParams(max_tokens=5, temperature=0.0)
    text, final, _ = _reply(backend.stream_chat(STORY, params))
    assert text
    assert final.finish_reason == "length"
    assert final.usage is not None and 0 < final.usage.completion_tokens <= 5


@pytest.mark.slow
def test_stop_ends_the_reply_promptly_with_the_text_so_far(backend: OpenAICompatBackend) -> None:
    stop = threading.Event()
    stopped_at = 0.0
    pieces: list[str] = []
    final: Chunk | None = None
    params = GenerationParams(max_tokens=1500, temperature=0.0)
    for chunk in backend.stream_chat(STORY, params, should_stop=stop.is_set):
        if chunk.finish_reason is not None:
            final = chunk
            break
        pieces.append(chunk.text)
        if len(pieces) == 3:
            stop.set()
            stopped_at = time.monotonic()
    latency = time.monotonic() - stopped_at
    assert final is not None and final.finish_reason == "cancelled"
    assert latency < 0.5, f"stop took {latency:.3f} s"
    assert len(pieces) >= 3 and "".join(pieces).strip()
    assert final.usage is not None and final.usage.completion_tokens == len(pieces)
    # The dropped connection freed the server: the next reply comes as usual.
    text, after, _ = _reply(backend.stream_chat(QUESTION, GREEDY))
    assert "Paris" in text and after.finish_reason in ("stop", "length")


@pytest.mark.slow
def test_a_stop_requested_before_the_reply_starts_sends_nothing(
    backend: OpenAICompatBackend,
) -> None:
    text, final, _ = _reply(backend.stream_chat(QUESTION, GREEDY, should_stop=lambda: True))
    assert text == "" and final.finish_reason == "cancelled"
    assert final.usage is not None and final.usage.completion_tokens == 0


@pytest.mark.slow
def test_two_replies_stream_at_once_through_one_backend(backend: OpenAICompatBackend) -> None:
    assert OpenAICompatBackend.supports_concurrent
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda _: _reply(backend.stream_chat(QUESTION, GREEDY)), range(2)))
    assert [final.finish_reason in ("stop", "length") for _, final, _ in results] == [True, True]
    assert results[0][0] == results[1][0] and "Paris" in results[0][0]


def test_an_unreachable_server_is_a_retryable_error_that_names_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"  # bound, released: nothing listens there
    unreachable = _compat(url, timeout=5)
    with pytest.raises(BackendError) as caught:
        unreachable.load()
    assert caught.value.retryable
    # Every user of the agent reads the message; the address is for staff (the worker's log).
    assert "reach" in str(caught.value) and url not in str(caught.value) and url in caught.value.detail


@pytest.mark.slow
def test_a_base_url_without_v1_is_a_404_with_a_hint(server_url: str) -> None:
    root = server_url.removesuffix("/v1")
    with pytest.raises(BackendError) as caught:
        _compat(root).load()
    assert not caught.value.retryable
    assert "HTTP 404" in str(caught.value) and "/v1" in caught.value.detail


@pytest.mark.slow
def test_a_prompt_past_the_context_window_fails_for_good_and_says_the_likely_cause(
    backend: OpenAICompatBackend,
) -> None:
    # Streamed, llama.cpp's server answers this with an empty 200 and keeps the reason to its
    # log (unstreamed it is a 400 "maximum context length is 2048 tokens").
    too_long = [{"role": "user", "content": "dragon " * 3000}]
    with pytest.raises(BackendError) as caught:
        list(backend.stream_chat(too_long, GREEDY))
    message = str(caught.value)
    assert not caught.value.retryable
    assert "context window" in message and backend.base_url in caught.value.detail


@pytest.mark.slow
def test_a_field_the_server_refuses_is_reported_in_its_words(server_url: str) -> None:
    # vLLM reads top_k=-1 as "no top-k"; llama.cpp's server requires top_k >= 0 and reports its
    # validation errors as HTTP 500, which the backend cannot tell from a crash (so: retryable).
    strict = _compat(server_url, extra_body={"top_k": -1})
    strict.load()
    try:
        with pytest.raises(BackendError) as caught:
            list(strict.stream_chat(QUESTION, GREEDY))
    finally:
        strict.close()
    # In the server's words for staff; users read that the server answered an error.
    assert "HTTP 500" in str(caught.value) and "top_k" not in str(caught.value)
    assert "top_k" in caught.value.detail and "greater than or equal to 0" in caught.value.detail


@pytest.mark.slow
def test_the_agents_api_key_reaches_the_server(keyed_server_url: str) -> None:
    keyed = _compat(keyed_server_url, api_key=SERVER_KEY)
    keyed.load()
    try:
        text, _, _ = _reply(keyed.stream_chat(QUESTION, GREEDY))
    finally:
        keyed.close()
    assert "Paris" in text


@pytest.mark.slow
@pytest.mark.parametrize("api_key", ["sk-wrong-key", ""])
def test_a_refused_api_key_fails_for_good_in_the_servers_words(keyed_server_url: str, api_key: str) -> None:
    refused = _compat(keyed_server_url, api_key=api_key)
    with pytest.raises(BackendError) as caught:
        refused.load()
    message = str(caught.value)
    assert not caught.value.retryable
    assert "HTTP 401" in message and "API key" in message and keyed_server_url not in message
    assert "Invalid API key" in caught.value.detail and keyed_server_url in caught.value.detail


@pytest.mark.slow
def test_a_refused_api_key_with_a_named_model_fails_at_the_first_reply(
    keyed_server_url: str,
) -> None:
    refused = _compat(keyed_server_url, api_key="sk-wrong-key", model="smollm2")
    refused.load()  # a server may serve a named model without listing it
    try:
        with pytest.raises(BackendError) as caught:
            list(refused.stream_chat(QUESTION, GREEDY))
    finally:
        refused.close()
    assert not caught.value.retryable and "Invalid API key" in caught.value.detail


@pytest.mark.slow
def test_llama_cpp_server_answers_an_unknown_model_name_with_its_default_model(
    server_url: str,
) -> None:
    # Not an error there (vLLM answers 404): worth knowing when an agent names a model wrongly.
    named = _compat(server_url, model="no-such-model")
    named.load()
    try:
        text, _, _ = _reply(named.stream_chat(QUESTION, GREEDY))
    finally:
        named.close()
    assert named.model == "no-such-model" and "Paris" in text


@pytest.mark.slow
@pytest.mark.parametrize(
    "messages",
    [
        [
            {"role": "system", "content": "You are a helpful assistant who answers briefly."},
            {"role": "user", "content": "Name three rivers in Europe and the seas they flow into."},
        ],
        [
            {"role": "system", "content": "You are a storyteller."},
            {"role": "user", "content": "The quick brown fox jumps over the lazy dog. " * 20},
        ],
    ],
    ids=["short-chat", "long-prose"],
)
def test_the_token_estimate_covers_the_servers_count_of_english_with_room_to_spare(
    backend: OpenAICompatBackend, server_url: str, messages: list[Any]
) -> None:
    # An estimate that falls short overflows the context window; one a little over does not.
    import openai

    with openai.OpenAI(api_key="none", base_url=server_url) as client:
        answer = client.chat.completions.create(model=backend.model, messages=messages, max_tokens=1)
    assert answer.usage is not None
    counted = answer.usage.prompt_tokens
    estimated = backend.count_tokens(messages)
    assert not OpenAICompatBackend.counts_tokens
    assert 1.0 <= estimated / counted <= 1.6, f"estimated {estimated}, server counted {counted}"


def test_options_need_a_base_url() -> None:
    with pytest.raises(OptionsError) as caught:
        options_validate("openai_compat", {"model": "x"})
    assert any(line.startswith("base_url:") for line in caught.value.messages)


def test_options_refuse_an_unknown_option() -> None:
    with pytest.raises(OptionsError) as caught:
        options_validate("openai_compat", {"base_url": "http://127.0.0.1:8000/v1", "top_k": 5})
    assert any(line.startswith("top_k:") for line in caught.value.messages)


def test_options_refuse_a_base_url_that_is_not_a_url() -> None:
    with pytest.raises(OptionsError) as caught:
        options_validate("openai_compat", {"base_url": "localhost port 8000"})
    assert any(line.startswith("base_url:") for line in caught.value.messages)


def test_hosted_vllm_without_vllm_here_points_to_its_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from inference import vllm_server

    monkeypatch.setattr(vllm_server, "serve_command", lambda: None)
    hosted = VLLMBackend(model_path="/models/qwen", options=options_validate("vllm", {}))
    with pytest.raises(BackendError) as caught:
        hosted.load()
    assert not caught.value.retryable
    assert "hosted vLLM engine runs on a vllm worker" in str(caught.value)
    assert '"external"' in str(caught.value)


def test_external_vllm_without_a_base_url_is_refused_when_the_agent_is_saved() -> None:
    with pytest.raises(OptionsError, match="external mode needs base_url"):
        options_validate("vllm", {"mode": "external"})


def _vllm(url: str, **options: Any) -> VLLMBackend:
    opts = options_validate("vllm", {"mode": "external", "base_url": url, **options})
    return VLLMBackend(model_path="", options=opts)


@pytest.mark.slow
def test_external_vllm_talks_to_an_openai_compatible_server(server_url: str) -> None:
    external = _vllm(server_url, top_k=20, min_p=0.05, seed=7)
    # vLLM's own field; llama.cpp's server ignores it (its name is repeat_penalty), not refuses it.
    params = GenerationParams(max_tokens=48, temperature=0.0, repetition_penalty=1.1)
    external.load()
    try:
        text, final, _ = _reply(external.stream_chat(QUESTION, params))
    finally:
        external.close()
    assert "Paris" in text
    assert final.usage is not None and final.usage.completion_tokens > 0


@pytest.mark.slow
def test_external_vllm_sampling_fields_reach_the_server(backend: OpenAICompatBackend, server_url: str) -> None:
    # A hot sample with top_k=1 keeps only the likeliest token: the greedy reply, word for word.
    hot = GenerationParams(max_tokens=24, temperature=1.5, top_p=1.0)
    greedy, _, _ = _reply(backend.stream_chat(STORY, GenerationParams(max_tokens=24, temperature=0.0)))
    top1 = _vllm(server_url, top_k=1)
    seeded = _vllm(server_url, seed=1234)
    top1.load()
    seeded.load()
    try:
        assert _reply(top1.stream_chat(STORY, hot))[0] == greedy
        # The options' seed travels too: the same seed draws the same hot sample twice.
        first, _, _ = _reply(seeded.stream_chat(STORY, hot))
        second, _, _ = _reply(seeded.stream_chat(STORY, hot))
    finally:
        top1.close()
        seeded.close()
    assert first == second and first != greedy
    # Without a seed, the server's generator runs on: two hot samples differ.
    assert _reply(backend.stream_chat(STORY, hot))[0] != _reply(backend.stream_chat(STORY, hot))[0]


# --- Constraints: passed through to the server in OpenAI's fields ----------------------------------

CITY = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
    "required": ["city", "population"],
}
CITY_QUESTION = [{"role": "user", "content": "Name a large city and its population, as JSON."}]
SPEAKERS = ("chef", "pilot", "END")
WHO_NEXT = [
    {"role": "system", "content": "Pick who speaks next: chef, pilot, or END."},
    {"role": "user", "content": "How do I land a plane in fog?"},
]
WEATHER = Tool(
    "get_weather",
    "The weather now in a city.",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
WEATHER_QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def llama_style(server_url: str) -> Iterator[OpenAICompatBackend]:
    """The backend as an agent for llama-cpp-python's server sets it: schemas in json_object."""
    loaded = _compat(server_url, schema_style="llama-cpp-python")
    loaded.load()
    yield loaded
    loaded.close()


def _sent(constraint: Any, script: Script, **options: Any) -> tuple[dict[str, Any], list[Chunk]]:
    """The body the backend sent for ``constraint`` to a scripted server, and the reply's chunks."""
    with scripted_server(script) as url:
        backend = _compat(url, **options)
        backend.load()
        try:
            chunks = list(backend.stream_chat(QUESTION, GenerationParams(max_tokens=32, constraint=constraint)))
        finally:
            backend.close()
    assert len(script.bodies) == 1
    return script.bodies[0], chunks


def test_openai_compat_passes_json_schemas_choices_and_tools_to_the_server() -> None:
    assert OpenAICompatBackend.constraints == {"json_schema", "choice", "tools"}
    assert OpenAICompatBackend.renders_tools  # the server's template, not the worker, tells the tools


def test_a_regex_is_refused_naming_the_backend_before_any_request() -> None:
    script = Script([content("123")])
    with scripted_server(script) as url:
        backend = _compat(url)
        backend.load()
        with pytest.raises(ConstraintUnsupported) as caught:
            next(backend.stream_chat(QUESTION, GenerationParams(constraint=Regex(r"\d+"))))
        backend.close()
    assert script.bodies == []
    message = str(caught.value)
    assert "OpenAI-compatible server" in message and "regular expression" in message
    assert not caught.value.retryable


def test_a_json_schema_goes_as_openais_response_format() -> None:
    body, _ = _sent(JsonSchema(CITY, name="city"), Script([content("{}")]))
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "city", "schema": CITY, "strict": True},
    }
    assert "tools" not in body


def test_any_json_object_is_openais_json_object_mode() -> None:
    body, _ = _sent(JsonSchema({"type": "object"}), Script([content("{}")]))
    assert body["response_format"] == {"type": "json_object"}


@pytest.mark.parametrize(
    ("pieces", "option"),
    [
        (['"pi', 'lot"'], "pilot"),
        ([' "END"', "\n"], "END"),
        # An escape cut between pieces, a surrogate pair cut between pieces.
        (['"sous-\\', 'u00e9t\\u00e9"'], "sous-été"),
        (['"\\ud83d', '\\ude80 crew"'], "\U0001f680 crew"),
    ],
)
def test_a_choice_goes_as_a_string_enum_and_the_bare_option_streams_back(pieces: list[str], option: str) -> None:
    body, chunks = _sent(Choice(("pilot", "END", "sous-été", "\U0001f680 crew")), Script([content(p) for p in pieces]))
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"] == {
        "type": "string",
        "enum": ["pilot", "END", "sous-été", "\U0001f680 crew"],
    }
    assert "".join(c.text for c in chunks) == option
    assert all('"' not in c.text for c in chunks)


def test_a_server_that_ignores_the_choice_is_an_error_not_a_wrong_answer() -> None:
    with pytest.raises(BackendError) as caught:
        _sent(Choice(("pilot", "chef")), Script([content("The pilot")]))
    assert "did not hold its answer to the choice" in str(caught.value)
    assert "The pilot" in caught.value.detail


def test_tools_go_as_openais_tools_and_tool_choice() -> None:
    constraint = ToolCalls((WEATHER,), mode="required", parallel=False)
    body, _ = _sent(constraint, Script([content("ok")]))
    assert body["tools"] == [
        {
            "type": "function",
            "function": {"name": "get_weather", "description": WEATHER.description, "parameters": WEATHER.parameters},
        }
    ]
    assert body["tool_choice"] == "required" and body["parallel_tool_calls"] is False
    assert body["messages"] == QUESTION  # the server's template renders the tools


def test_streamed_tool_calls_come_back_whole_in_the_generic_format_after_the_text() -> None:
    script = Script(
        [
            content("Let me check both."),
            tool_piece(0, name="get_weather"),
            tool_piece(0, arguments='{"city":'),
            tool_piece(0, arguments=' "Paris"}'),
            tool_piece(1, name="get_weather"),
            tool_piece(1, arguments='{"city": "Oslo"}'),
        ],
        finish_reason="tool_calls",
    )
    _, chunks = _sent(ToolCalls((WEATHER,), mode="auto"), script)
    text, calls = tool_calls_parse("".join(c.text for c in chunks))
    assert text == "Let me check both."
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_weather", {"city": "Oslo"}),
    ]
    assert chunks[-1].finish_reason == "tool_calls"
    # Each call arrives as one piece, whole, on a line of its own.
    assert len(chunks) == 4 and [c.text.startswith("\n" + TOOL_CALL_OPEN) for c in chunks[1:3]] == [True, True]


@pytest.mark.slow
def test_llama_cpp_pythons_server_refuses_openais_json_schema_type(backend: OpenAICompatBackend) -> None:
    # Hence the schema_style option: that server reads a schema only beside json_object.
    with pytest.raises(BackendError) as caught:
        list(backend.stream_chat(CITY_QUESTION, GenerationParams(max_tokens=16, constraint=JsonSchema(CITY))))
    assert "response_format" in caught.value.detail


@pytest.mark.slow
def test_a_json_schema_answer_validates_every_time_at_temperature_0_7(llama_style: OpenAICompatBackend) -> None:
    for seed in range(1, 6):
        params = GenerationParams(max_tokens=96, temperature=0.7, seed=seed, constraint=JsonSchema(CITY))
        text, final, _ = _reply(llama_style.stream_chat(CITY_QUESTION, params))
        assert final.finish_reason == "stop", text
        assert json_schema_check(CITY, json.loads(text)) is None, text


@pytest.mark.slow
def test_a_choice_answers_with_a_bare_option_every_time(llama_style: OpenAICompatBackend) -> None:
    for seed in range(1, 6):
        params = GenerationParams(max_tokens=16, temperature=1.0, seed=seed, constraint=Choice(SPEAKERS))
        text, final, pieces = _reply(llama_style.stream_chat(WHO_NEXT, params))
        assert text in SPEAKERS and final.finish_reason == "stop"
        assert all('"' not in piece.text for piece in pieces)


@pytest.mark.slow
def test_a_named_tool_comes_back_as_a_valid_call_in_the_generic_format(backend: OpenAICompatBackend) -> None:
    # llama-cpp-python's server honours a named tool_choice (a grammar of the tool's parameters)
    # and streams the call as delta.tool_calls; "auto" and "required" it leaves to its chat format.
    params = GenerationParams(
        max_tokens=64, temperature=0.7, seed=3, constraint=ToolCalls((WEATHER,), mode="get_weather")
    )
    text, final, _ = _reply(backend.stream_chat(WEATHER_QUESTION, params))
    before, calls = tool_calls_parse(text)
    assert before == "" and [c.name for c in calls] == ["get_weather"], text
    assert json_schema_check(WEATHER.parameters, json.loads(calls[0].arguments)) is None
    assert final.finish_reason == "tool_calls"


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_thinking_a_server_sends_apart_comes_back_in_think_tags_for_the_worker_to_split(field: str) -> None:
    script = Script([{field: "The user "}, {field: "asks."}, content("Paris"), content(".")])
    _, chunks = _sent(None, script)
    text = "".join(c.text for c in chunks)
    assert text == "<think>The user asks.</think>Paris."
    split = ThinkSplitter(opened=False)
    parts = split.feed(text) + split.finish()
    assert "".join(t for p, t in parts if p == "reasoning") == "The user asks."
    assert "".join(t for p, t in parts if p == "content") == "Paris."
