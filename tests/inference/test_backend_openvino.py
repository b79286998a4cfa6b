"""The OpenVINO GenAI backend on the bundled model, converted GGUF -> OpenVINO IR for real.

The conversion runs once per machine (cached under ~/.cache/chatsite/models, or
$CHATSITE_MODEL_CACHE) and once per test run at most; the engine and the model are real.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from inference.backends.base import BackendError, Chunk, GenerationParams
from inference.backends.llama_cpp import LlamaCppOptions
from inference.backends.openvino import OpenVINOOptions
from inference.backends.registry import OptionsError, options_validate
from inference.bundled import BUNDLED_NAME, bundled_model_path
from inference.models import ModelArtifact

pytestmark = pytest.mark.slow

openvino_genai = pytest.importorskip("openvino_genai")

# The bundled agent's system prompt (manage.py bootstrap). Without one, the template's default
# system prompt leaves "The" and "L'" nearly tied for the first token, and llama.cpp's Q4_1 kernels
# pick "L'Étoile, la Marseillaise, ..." where float32 picks "The capital of France is Paris."
QUESTION = [
    {"role": "system", "content": "You are a helpful assistant. Answer clearly and briefly."},
    {"role": "user", "content": "What is the capital of France?"},
]
# transformers' greedy answer (float32, on the Hugging Face folder made from the GGUF): the
# reference every backend's greedy answer is compared with.
REFERENCE = "The capital of France is Paris."
GREEDY = GenerationParams(max_tokens=48, temperature=0.0)
STORY = [{"role": "user", "content": "Write a long story about a dragon and a knight."}]


@pytest.fixture(scope="session")
def ir_dir() -> Path:
    from pipeline.convert import openvino_ir_for_bundled

    return openvino_ir_for_bundled()


@pytest.fixture(scope="session")
def backend(ir_dir: Path) -> Iterator[Any]:
    from inference.backends.openvino import OpenVINOBackend

    b = OpenVINOBackend(model_path=str(ir_dir), options=OpenVINOOptions())
    b.load()
    yield b
    b.close()


@pytest.fixture(scope="session")
def llama() -> Iterator[Any]:
    pytest.importorskip("llama_cpp")
    from inference.backends.llama_cpp import LlamaCppBackend

    b = LlamaCppBackend(model_path=str(bundled_model_path()), options=LlamaCppOptions())
    b.load()
    yield b
    b.close()


def collect(chunks: Iterator[Chunk]) -> tuple[str, list[Chunk]]:
    parts = list(chunks)
    return "".join(c.text for c in parts), parts


def test_greedy_answer_is_the_reference_answer_as_with_llama_cpp(backend: Any, llama: Any) -> None:
    ov_text, ov_parts = collect(backend.stream_chat(QUESTION, GREEDY))
    llama_text, _ = collect(llama.stream_chat(QUESTION, GREEDY))
    # The same opening words naming Paris; int4 weights may word the rest differently.
    assert ov_text.split()[:5] == llama_text.split()[:5] == REFERENCE.split()[:5], (ov_text, llama_text)
    assert "Paris" in ov_text and "Paris" in llama_text
    assert ov_parts[-1].finish_reason == "stop"


def test_prompt_tokens_match_llama_cpp_count_of_the_same_messages(backend: Any, llama: Any) -> None:
    messages = [
        {"role": "system", "content": "You are a terse geography tutor."},
        {"role": "user", "content": "Name  two rivers in France, please."},
    ]
    assert backend.count_tokens(messages) == llama.count_tokens(messages) > 10


def test_stream_comes_in_several_chunks_that_add_up_to_the_engine_answer(backend: Any, ir_dir: Path) -> None:
    text, parts = collect(backend.stream_chat(QUESTION, GREEDY))
    assert len([p for p in parts if p.text]) >= 3
    assert [p.finish_reason for p in parts].count(None) == len(parts) - 1
    # The engine's own, non-streamed answer to the same history.
    pipe = openvino_genai.LLMPipeline(str(ir_dir), "CPU", ATTENTION_BACKEND="SDPA")
    reference = pipe.generate(openvino_genai.ChatHistory(QUESTION), max_new_tokens=48, do_sample=False)
    assert text == reference.texts[0]


def test_usage_counts_the_prompt_with_the_model_tokenizer(backend: Any) -> None:
    _, parts = collect(backend.stream_chat(QUESTION, GREEDY))
    usage = parts[-1].usage
    assert usage is not None
    assert usage.prompt_tokens == backend.count_tokens(QUESTION) > 5
    assert 0 < usage.completion_tokens <= GREEDY.max_tokens


def test_max_tokens_ends_the_reply_with_length(backend: Any) -> None:
    text, parts = collect(backend.stream_chat(STORY, GenerationParams(max_tokens=7, temperature=0.0)))
    assert parts[-1].finish_reason == "length"
    assert parts[-1].usage is not None and parts[-1].usage.completion_tokens == 7
    assert text.strip()


def test_stop_ends_the_stream_promptly_and_keeps_the_partial_text(backend: Any) -> None:
    stop = threading.Event()
    stopped_at = 0.0
    parts: list[Chunk] = []
    params = GenerationParams(max_tokens=400, temperature=0.0)
    for chunk in backend.stream_chat(STORY, params, should_stop=stop.is_set):
        parts.append(chunk)
        if len(parts) == 5:
            stopped_at = time.monotonic()
            stop.set()
    took = time.monotonic() - stopped_at
    assert took < 0.5, f"the stream went on for {took:.2f} s after stop"
    last = parts[-1]
    assert last.finish_reason == "cancelled"
    assert "".join(p.text for p in parts).strip()
    assert last.usage is not None and 5 <= last.usage.completion_tokens < 400


def test_a_reader_that_walks_away_frees_the_model_for_the_next_reply(backend: Any) -> None:
    stream = backend.stream_chat(STORY, GenerationParams(max_tokens=400, temperature=0.0))
    next(stream)
    started = time.monotonic()
    stream.close()
    assert time.monotonic() - started < 0.5
    text, _ = collect(backend.stream_chat(QUESTION, GREEDY))
    assert "Paris" in text


def test_tokenizer_round_trip_keeps_spaces_and_matches_the_gguf(ir_dir: Path) -> None:
    from inference.llama_runtime import llama_load

    text = "The capital of France is Paris.  Two  spaces, a tab\tand a new line\nstay , as 'it 's."
    tokenizer = openvino_genai.Tokenizer(str(ir_dir))
    ids = tokenizer.encode(text, add_special_tokens=False).input_ids.data[0].tolist()
    assert tokenizer.decode(ids) == text
    # The same ids as the GGUF's own tokenizer, as llama.cpp reads it.
    vocab = llama_load(model_path=str(bundled_model_path()), vocab_only=True, verbose=False)
    assert ids == vocab.tokenize(text.encode(), add_bos=False, special=True)


def test_second_turn_of_a_session_reuses_the_cache_and_answers_sensibly(ir_dir: Path) -> None:
    from inference.backends.openvino import OpenVINOBackend

    reusing = OpenVINOBackend(model_path=str(ir_dir), options=OpenVINOOptions(kv_cache_reuse=True))
    fresh = OpenVINOBackend(model_path=str(ir_dir), options=OpenVINOOptions(kv_cache_reuse=False))
    reusing.load()
    fresh.load()
    try:
        first, _ = collect(reusing.stream_chat(QUESTION, GREEDY, session_key="s1"))
        assert "Paris" in first
        turn2 = [
            *QUESTION,
            {"role": "assistant", "content": first},
            {"role": "user", "content": "And what is the capital of Germany?"},
        ]
        second, parts = collect(reusing.stream_chat(turn2, GREEDY, session_key="s1"))
        assert "Berlin" in second, second
        usage = parts[-1].usage
        assert usage is not None and usage.prompt_tokens == reusing.count_tokens(turn2)
        # Only the new turn was computed; the first turn came from the KV cache.
        assert reusing.last_prefill_tokens is not None
        assert reusing.last_prefill_tokens < usage.prompt_tokens / 2
        # Reuse changes nothing in the answer: a backend that recomputes everything agrees.
        again, _ = collect(fresh.stream_chat(turn2, GREEDY, session_key="s1"))
        assert fresh.last_prefill_tokens == usage.prompt_tokens
        assert again == second
        # A turn of another conversation does not inherit the first one's cache.
        other, _ = collect(reusing.stream_chat(QUESTION, GREEDY, session_key="s2"))
        assert other == first
    finally:
        reusing.close()
        fresh.close()


def test_an_engine_error_during_generation_is_a_backend_error_and_the_model_goes_on(backend: Any) -> None:
    # GenerationParams does not validate; the engine refuses this in its own thread.
    with pytest.raises(BackendError, match="repetition_penalty"):
        collect(backend.stream_chat(QUESTION, GenerationParams(temperature=0.0, repetition_penalty=0.0)))
    text, _ = collect(backend.stream_chat(QUESTION, GREEDY))
    assert "Paris" in text


def test_missing_folder_is_a_clear_backend_error(tmp_path: Path) -> None:
    from inference.backends.openvino import OpenVINOBackend

    missing = tmp_path / "no-such-model"
    with pytest.raises(BackendError, match="not found"):
        OpenVINOBackend(model_path=str(missing), options=OpenVINOOptions()).load()
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "openvino_model.xml").write_text("<net/>")
    with pytest.raises(BackendError, match="openvino_tokenizer.xml"):
        OpenVINOBackend(model_path=str(tmp_path / "half"), options=OpenVINOOptions()).load()


def test_an_unknown_or_absent_device_is_a_clear_error(ir_dir: Path) -> None:
    import openvino

    from inference.backends.openvino import OpenVINOBackend

    with pytest.raises(OptionsError, match="device"):
        options_validate("openvino", {"device": "TPU"})
    present = {d.split(".")[0] for d in openvino.Core().available_devices}
    assert "CPU" in present
    # Every device this machine lacks (here: NPU and GPU) is refused with a message naming what it has.
    for device in [d for d in ("NPU", "GPU") if d not in present]:
        with pytest.raises(BackendError, match=f"device {device} is not available.*CPU"):
            OpenVINOBackend(model_path=str(ir_dir), options=OpenVINOOptions(device=device)).load()


def test_check_reports_the_devices() -> None:
    from inference.backends.openvino import OpenVINOBackend

    result = OpenVINOBackend.check()
    assert result.ok and "CPU" in result.detail


def test_export_command_registers_the_ir_with_its_gguf_parent(db: Any, ir_dir: Path) -> None:
    gguf = ModelArtifact.objects.create(
        name=BUNDLED_NAME, format="gguf", path=str(bundled_model_path()), quantization="Q4_1"
    )
    out = StringIO()
    call_command("export_openvino", "bundled", stdout=out)
    assert "reusing the complete export" in out.getvalue()
    ir = ModelArtifact.objects.get(format="openvino")
    assert ir.path == str(ir_dir) and ir.quantization == "int4"
    assert ir.parent == gguf and ir.lineage() == [gguf, ir]
    assert ir.size_bytes == ir.measure_size() and ir.size_bytes > 10_000_000
    assert ir.context_length == 8192

    again = StringIO()
    call_command("export_openvino", "bundled", stdout=again)
    assert "kept" in again.getvalue()
    assert ModelArtifact.objects.filter(format="openvino").count() == 1


def test_export_command_refuses_contradictory_or_impossible_settings() -> None:
    with pytest.raises(CommandError, match="either"):
        call_command("export_openvino", "bundled", "--gguf", str(bundled_model_path()), stdout=StringIO())
    with pytest.raises(CommandError, match="group_size"):
        call_command("export_openvino", "--group-size", "0", stdout=StringIO())
    with pytest.raises(CommandError, match="not found"):
        call_command("export_openvino", "--gguf", "/no/such/model.gguf", stdout=StringIO())


def test_converting_a_file_that_is_no_gguf_names_the_step(tmp_path: Path) -> None:
    from pipeline.convert import ConversionError, gguf_to_hf

    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"this is not a GGUF file at all" * 100)
    with pytest.raises(ConversionError) as raised:
        gguf_to_hf(fake, tmp_path / "hf")
    assert raised.value.step == "gguf_to_hf"
    assert raised.value.output_tail
