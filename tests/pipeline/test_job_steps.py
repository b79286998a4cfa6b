"""Job steps without a real model: RTN's quantization math and folder round trip, perplexity math."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.jobs.steps import rtn
from pipeline.jobs.steps.engines import Timer
from pipeline.jobs.steps.evaluate import perplexity, window_nll, windows
from pipeline.jobs.steps.protocol import StepError

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def _linear(in_features: int, out_features: int, seed: int = 0) -> Any:
    torch.manual_seed(seed)
    layer = torch.nn.Linear(in_features, out_features, bias=True)
    with torch.no_grad():
        layer.weight[3] *= 10  # rows of very different ranges: per-row scales matter
        layer.weight[5] = 0  # an all-zero row must not divide by zero
    return layer


def test_importing_the_step_modules_does_not_import_torch() -> None:
    code = (
        "import sys, pipeline.jobs.steps.rtn, pipeline.jobs.steps.evaluate; "
        "sys.exit('torch' in sys.modules or 'transformers' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2]).returncode == 0


@pytest.mark.parametrize("bits, qmax", [(8, 127), (4, 7)])
def test_per_row_absmax_rtn_stays_within_half_a_step_of_each_row(bits: int, qmax: int) -> None:
    layer = _linear(64, 12)
    q, scale = rtn.quantize_rows(layer.weight, bits)
    w = layer.weight.detach()
    assert q.dtype == torch.int8 and scale.shape == (12,)
    absmax = w.abs().amax(dim=1)
    nonzero = absmax > 0
    torch.testing.assert_close(scale[nonzero], absmax[nonzero] / qmax)
    assert scale[5] == 1 and not q[5].any()
    assert int(q.abs().max()) == qmax
    assert bool((q.abs().amax(dim=1)[nonzero] == qmax).all())  # each row's largest weight hits ±qmax
    err = (w - q.float() * scale[:, None]).abs()
    assert bool((err <= scale[:, None] / 2 + 1e-6).all())
    # Relative to each row's range the error is at most 1 / (2 qmax).
    rel = (err.amax(dim=1)[nonzero] / absmax[nonzero]).max().item()
    assert rel <= 1 / (2 * qmax) + 1e-6


def test_int4_values_pack_two_per_byte_and_unpack_exactly() -> None:
    torch.manual_seed(1)
    q = torch.randint(-7, 8, (5, 33), dtype=torch.int8)  # odd width: one padded nibble per row
    packed = rtn.pack_int4(q)
    assert packed.dtype == torch.uint8 and packed.shape == (5, 17)
    assert int(packed[0, 0]) == (int(q[0, 0]) + 8) | ((int(q[0, 1]) + 8) << 4)
    assert torch.equal(rtn.unpack_int4(packed, 33), q)


@pytest.mark.parametrize("bits", [8, 4])
def test_qlinear_computes_with_the_dequantized_weights(bits: int) -> None:
    layer = _linear(40, 16, seed=2)
    qlayer = rtn.qlinear_from_linear(layer, bits)
    assert qlayer.qweight.dtype == (torch.int8 if bits == 8 else torch.uint8)
    assert qlayer.qweight.shape == ((16, 40) if bits == 8 else (16, 20))
    q, scale = rtn.quantize_rows(layer.weight, bits)
    torch.testing.assert_close(qlayer.int_weight(), q, rtol=0, atol=0)
    x = torch.randn(3, 40)
    expected = torch.nn.functional.linear(x, q.float() * scale[:, None], layer.bias)
    torch.testing.assert_close(qlayer(x), expected)
    # And it stays close to the float layer: int8 tightly, int4 loosely.
    ref = layer(x).detach()
    rel = ((qlayer(x) - ref).norm() / ref.norm()).item()
    assert rel < (0.01 if bits == 8 else 0.15)


def _tiny_llama(seed: int = 0) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=96,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


@pytest.mark.parametrize("bits", [8, 4])
def test_a_quantized_model_saves_and_loads_with_the_same_integers(tmp_path: Path, bits: int) -> None:
    model = _tiny_llama()
    ids = torch.randint(0, 96, (1, 12))
    with torch.no_grad():
        float_logits = model(ids).logits
    embed = model.model.embed_tokens.weight.detach().clone()
    modules = rtn.quantize_model(model, bits)
    assert len(modules) == 2 * 7  # q k v o gate up down in each decoder layer
    assert all(".layers." in name for name in modules)
    with torch.no_grad():
        quant_logits = model(ids).logits

    rtn.save_rtn(model, tmp_path / "out", bits=bits, modules=modules)
    meta = json.loads((tmp_path / "out" / "rtn.json").read_text())
    assert meta["bits"] == bits and meta["modules"] == modules
    assert not (tmp_path / "out" / "model.safetensors").exists()  # a plain from_pretrained must refuse it

    loaded = rtn.load_rtn(tmp_path / "out")
    cls = rtn.qlinear_class()
    assert all(isinstance(loaded.get_submodule(name), cls) for name in modules)
    assert type(loaded.lm_head) is torch.nn.Linear  # kept float, and still tied
    assert loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()
    torch.testing.assert_close(loaded.model.embed_tokens.weight, embed, rtol=0, atol=0)
    for name in modules:
        assert torch.equal(loaded.get_submodule(name).qweight, model.get_submodule(name).qweight)
    with torch.no_grad():
        loaded_logits = loaded(ids).logits
    torch.testing.assert_close(loaded_logits, quant_logits)
    # The float weight cached on the first forward is exactly the dequantized integers, and it is
    # not part of what gets saved.
    first = loaded.get_submodule(modules[0])
    assert first._dequantized is not None and torch.equal(first._dequantized, first.dequantize())
    assert not any("_dequantized" in key for key in loaded.state_dict())
    uncached = rtn.load_rtn(tmp_path / "out", cache_dequantized=False)
    with torch.no_grad():
        torch.testing.assert_close(uncached(ids).logits, loaded_logits)
    assert uncached.get_submodule(modules[0])._dequantized is None
    drift = ((quant_logits - float_logits).norm() / float_logits.norm()).item()
    assert drift < (0.02 if bits == 8 else 0.3)


def test_the_quantize_rtn_step_writes_a_folder_that_loads(tmp_path: Path) -> None:
    _tiny_llama().save_pretrained(tmp_path / "hf")
    (tmp_path / "hf" / "tokenizer_config.json").write_text('{"marker": "copied verbatim"}')
    result = rtn.quantize_rtn({"source": str(tmp_path / "hf"), "output": str(tmp_path / "q"), "bits": 4})
    assert result["format"] == "rtn" and result["layers"] == 2 and result["quantization"] == "RTN int4 per-row"
    assert result["size_bytes"] > 0
    assert (tmp_path / "q" / "tokenizer_config.json").read_text() == '{"marker": "copied verbatim"}'
    assert rtn.load_rtn(tmp_path / "q").config.num_hidden_layers == 2
    with pytest.raises(StepError):
        rtn.quantize_rtn({"source": str(tmp_path / "hf"), "output": str(tmp_path / "q"), "bits": 4})
    with pytest.raises(StepError):
        rtn.quantize_rtn({"source": str(tmp_path / "hf"), "output": str(tmp_path / "q3"), "bits": 3})


# ---------------------------------------------------------------- perplexity math


def test_uniform_logits_give_the_vocabulary_size() -> None:
    ids = [3, 1, 4, 1, 5, 9, 2, 6]
    nll, count = window_nll(np.zeros((len(ids), 10), dtype=np.float32), ids)
    assert count == 7
    assert perplexity(nll, count) == pytest.approx(10.0)


def test_confident_correct_logits_give_a_perplexity_near_one() -> None:
    ids = [0, 2, 1, 3]
    logits = np.full((4, 4), -50.0, dtype=np.float32)
    for pos, nxt in enumerate(ids[1:]):
        logits[pos, nxt] = 50.0
    logits[3] = 0  # the last position predicts nothing and must not count
    nll, count = window_nll(logits, ids)
    assert count == 3 and perplexity(nll, count) == pytest.approx(1.0)


def test_a_hand_computed_window() -> None:
    # Position 0 predicts id 1 with p = 3/4, position 1 predicts id 0 with p = 1/2.
    logits = np.array([[0.0, math.log(3)], [0.0, 0.0], [7.0, -7.0]])
    nll, count = window_nll(logits, [0, 1, 0])
    assert count == 2
    assert nll == pytest.approx(math.log(4 / 3) + math.log(2))
    assert perplexity(nll, count) == pytest.approx(math.exp((math.log(4 / 3) + math.log(2)) / 2))


def test_large_logits_do_not_overflow() -> None:
    logits = np.array([[1e4, 0.0], [0.0, 0.0]], dtype=np.float32)
    nll, _ = window_nll(logits, [1, 0])
    assert nll == pytest.approx(0.0, abs=1e-9)


def test_windows_do_not_overlap_and_drop_a_last_window_that_predicts_nothing() -> None:
    assert windows(list(range(10)), 4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert windows(list(range(9)), 4) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    with pytest.raises(StepError):
        perplexity(0.0, 0)


def test_the_timer_reports_prefill_and_decode_rates() -> None:
    timer = Timer()
    timer.start = 0.0
    timer.stamps = [0.5, 0.6, 0.7, 0.8, 0.9]
    rates = timer.rates(prompt_tokens=100)
    assert rates["prefill_tokens_per_s"] == 200.0
    assert rates["decode_tokens_per_s"] == 10.0
    assert rates["speed_generated_tokens"] == 5


def test_the_default_held_out_text_is_there_and_differs_from_the_calibration_text() -> None:
    data = Path(__file__).resolve().parents[2] / "pipeline" / "jobs" / "data"
    text = (data / "heldout.txt").read_text(encoding="utf-8")
    assert 8_000 <= len(text.encode()) <= 12_500
    calibration = data / "calibration.txt"
    if calibration.is_file():
        cal = calibration.read_text(encoding="utf-8")
        held = {p.strip() for p in text.split("\n\n") if p.strip()}
        assert not held & {p.strip() for p in cal.split("\n\n") if p.strip()}
