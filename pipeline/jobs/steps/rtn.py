"""Round-to-nearest (RTN) weight quantization: int8 or int4, symmetric, one scale per row.

Every ``nn.Linear`` inside the decoder layers becomes a :class:`QLinear` holding integer weights
and one float32 scale per output channel (row): ``scale = max|w_row| / qmax`` with ``qmax`` 127
(int8) or 7 (int4), ``q = clamp(round(w / scale), -qmax, qmax)``, so ``|w - q * scale| <= scale / 2``.
Embeddings, norms and ``lm_head`` (tied to the embeddings in SmolLM2) stay float32.

Storage: int8 values in an ``int8`` tensor ``[out, in]``; int4 values packed two per byte in a
``uint8`` tensor ``[out, ceil(in / 2)]``: each value is stored as ``q + 8`` (0..15), column ``2j`` in
the low nibble and column ``2j + 1`` in the high nibble (an odd last column is padded with 8).

The folder: ``config.json`` and ``generation_config.json`` as the source had them, the tokenizer
files copied verbatim, ``rtn.json`` (bits, scheme, quantized modules) and ``rtn.safetensors``
(the model's state dict with ``<module>.qweight`` / ``<module>.scale`` for each QLinear; tied
tensors stored once). The weights file is deliberately not ``model.safetensors``: a plain
``from_pretrained`` must refuse the folder rather than load it with random Linear weights.
:func:`load_rtn` rebuilds the model from the config, swaps in the QLinear modules and loads the
file; QLinear computes its weight from the stored integers (cached after the first forward by
default), so evaluation runs on the quantized values.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.jobs.steps.protocol import StepError, progress, tokenizer_files_copy

if TYPE_CHECKING:
    import torch

WEIGHTS_FILE = "rtn.safetensors"
META_FILE = "rtn.json"
SCHEME = "symmetric absmax round-to-nearest, one float32 scale per output row"
INT4_STORAGE = "packed two per byte in uint8: q + 8, even column in the low nibble"
# A Linear inside a decoder layer: "model.layers.3.self_attn.q_proj" and the like.
_DECODER_LINEAR = re.compile(r"(^|\.)layers\.(\d+)\.")


def qmax_for(bits: int) -> int:
    if bits not in (4, 8):
        raise StepError(f"bits must be 8 or 4, not {bits!r}")
    return (1 << (bits - 1)) - 1


def quantize_rows(weight: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row absmax RTN: integer values (int8 storage, not packed) and float32 scales ``[out]``."""
    import torch

    qmax = qmax_for(bits)
    w = weight.detach().to(torch.float32)
    absmax = w.abs().amax(dim=1)
    scale = torch.where(absmax > 0, absmax / qmax, torch.ones_like(absmax))
    q = torch.clamp(torch.round(w / scale[:, None]), -qmax, qmax).to(torch.int8)
    return q, scale


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """int8 values in [-8, 7], ``[out, in]`` -> uint8 ``[out, ceil(in / 2)]``, two per byte."""
    import torch

    u = (q.to(torch.int16) + 8).to(torch.uint8)
    if u.shape[1] % 2:
        u = torch.cat([u, torch.full((u.shape[0], 1), 8, dtype=torch.uint8)], dim=1)
    return u[:, 0::2] | (u[:, 1::2] << 4)


def unpack_int4(packed: torch.Tensor, in_features: int) -> torch.Tensor:
    """The inverse of :func:`pack_int4`: int8 ``[out, in_features]``."""
    import torch

    low = (packed & 0x0F).to(torch.int8) - 8
    high = (packed >> 4).to(torch.int8) - 8
    return torch.stack([low, high], dim=2).reshape(packed.shape[0], -1)[:, :in_features]


_QLinear: Any = None


def qlinear_class() -> Any:
    """The QLinear class, defined on first use so that importing this module does not import torch."""
    global _QLinear
    if _QLinear is not None:
        return _QLinear
    import torch
    from torch import nn
    from torch.nn import functional

    class QLinear(nn.Module):
        """A Linear layer holding RTN integer weights and per-row scales; dequantizes on the fly."""

        qweight: torch.Tensor  # buffers, registered in __init__
        scale: torch.Tensor

        def __init__(self, in_features: int, out_features: int, bits: int, bias: bool = False) -> None:
            super().__init__()
            qmax_for(bits)
            self.in_features = in_features
            self.out_features = out_features
            self.bits = bits
            if bits == 8:
                self.register_buffer("qweight", torch.zeros(out_features, in_features, dtype=torch.int8))
            else:
                cols = (in_features + 1) // 2
                self.register_buffer("qweight", torch.full((out_features, cols), 0x88, dtype=torch.uint8))
            self.register_buffer("scale", torch.ones(out_features, dtype=torch.float32))
            self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
            # With cache_dequantized on, the float weight is computed from the stored integers once
            # (on the first forward) and reused; off, every forward dequantizes anew.
            self.cache_dequantized = False
            self._dequantized: torch.Tensor | None = None

        @classmethod
        def from_linear(cls, linear: nn.Linear, bits: int) -> QLinear:
            q, scale = quantize_rows(linear.weight, bits)
            module = cls(linear.in_features, linear.out_features, bits, bias=linear.bias is not None)
            module.qweight = q if bits == 8 else pack_int4(q)
            module.scale = scale
            if linear.bias is not None:
                module.bias = nn.Parameter(linear.bias.detach().to(torch.float32).clone())
            return module

        def int_weight(self) -> torch.Tensor:
            """The integer values, int8 ``[out, in]`` (unpacked for int4)."""
            return self.qweight if self.bits == 8 else unpack_int4(self.qweight, self.in_features)

        def dequantize(self) -> torch.Tensor:
            return self.int_weight().to(torch.float32) * self.scale[:, None]

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if not self.cache_dequantized:
                return functional.linear(x, self.dequantize().to(x.dtype), self.bias)
            if self._dequantized is None or self._dequantized.dtype != x.dtype:
                self._dequantized = self.dequantize().to(x.dtype)
            return functional.linear(x, self._dequantized, self.bias)

        def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
            self._dequantized = None  # new integers: drop the cached float weight
            super()._load_from_state_dict(*args, **kwargs)

        def extra_repr(self) -> str:
            return f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}"

    _QLinear = QLinear
    return QLinear


def qlinear_from_linear(linear: Any, bits: int) -> Any:
    return qlinear_class().from_linear(linear, bits)


def decoder_linears(model: Any) -> list[tuple[str, Any]]:
    """``(name, module)`` of every nn.Linear inside a decoder layer, in model order."""
    from torch import nn

    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and _DECODER_LINEAR.search(name)
    ]


def _layer_index(name: str) -> int:
    match = _DECODER_LINEAR.search(name)
    assert match is not None
    return int(match.group(2))


def _set_module(model: Any, name: str, module: Any) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def quantize_model(model: Any, bits: int, *, on_layer: Any = None) -> list[str]:
    """Replace the decoder layers' Linear modules by QLinear in place; the names replaced."""
    linears = decoder_linears(model)
    if not linears:
        raise StepError("the model has no nn.Linear inside decoder layers (model.layers.N) to quantize")
    layers = sorted({_layer_index(name) for name, _ in linears})
    done: list[str] = []
    for i, layer in enumerate(layers):
        for name, linear in linears:
            if _layer_index(name) == layer:
                _set_module(model, name, qlinear_from_linear(linear, bits))
                done.append(name)
        if on_layer is not None:
            on_layer(i + 1, len(layers))
    return done


def _empty_quantized_model(config: Any, modules: list[str], bits: int) -> Any:
    """A model of ``config`` whose ``modules`` are (zero) QLinear layers, ready for a state dict."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    cls = qlinear_class()
    for name in modules:
        linear = model.get_submodule(name)
        _set_module(model, name, cls(linear.in_features, linear.out_features, bits, bias=linear.bias is not None))
    return model


def save_rtn(model: Any, out: Path, *, bits: int, modules: list[str], source: Path | None = None) -> None:
    """Write the quantized model's folder (config, tokenizer copied from ``source``, rtn.json, weights)."""
    from safetensors.torch import save_model

    out.mkdir(parents=True, exist_ok=True)
    if source is not None:
        # Verbatim from the source: its tokenizer was fixed by hand and is never derived again.
        tokenizer_files_copy(source, out, also=("config.json", "generation_config.json"))
    if not (out / "config.json").is_file():
        model.config.save_pretrained(out)
    # save_model stores a tensor shared by two names (tied lm_head / embeddings) once.
    save_model(model, str(out / WEIGHTS_FILE), metadata={"format": "pt", "rtn_bits": str(bits)})
    meta = {
        "format": "rtn",
        "bits": bits,
        "scheme": SCHEME,
        "group_size": None,
        "qmax": qmax_for(bits),
        "storage": "int8" if bits == 8 else INT4_STORAGE,
        "weights_file": WEIGHTS_FILE,
        "modules": modules,
        "kept_float": "embeddings, norms, lm_head (tied to the embeddings when the config says so)",
        "tie_word_embeddings": bool(getattr(model.config, "tie_word_embeddings", False)),
        "source": str(source) if source is not None else None,
    }
    (out / META_FILE).write_text(json.dumps(meta, indent=2))


def load_rtn(path: str | Path, *, cache_dequantized: bool = True) -> Any:
    """The transformers model of an RTN folder, its decoder Linear layers as QLinear (eval mode).

    ``cache_dequantized`` (the default) makes each QLinear keep the float weight it computes from
    its integers on the first forward: the same values as dequantizing on every forward, at float
    speed (torch has no int8 x float32 CPU kernel to gain from), for one float copy of the weights.
    """
    from safetensors.torch import load_model
    from transformers import AutoConfig

    folder = Path(path)
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        raise StepError(f"{folder} is not an RTN folder (no {META_FILE})")
    meta = json.loads(meta_path.read_text())
    config = AutoConfig.from_pretrained(folder)
    model = _empty_quantized_model(config, list(meta["modules"]), int(meta["bits"]))
    missing, unexpected = load_model(model, str(folder / meta.get("weights_file", WEIGHTS_FILE)), strict=True)
    if missing or unexpected:  # strict=True raises first; kept for clarity
        raise StepError(f"{folder}: weights do not match the model (missing {missing}, unexpected {unexpected})")
    model.eval()
    cls = qlinear_class()
    for module in model.modules():
        if isinstance(module, cls):
            module.cache_dequantized = cache_dequantized
    return model


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def quantize_rtn(params: dict[str, Any]) -> dict[str, Any]:
    started = time.monotonic()
    try:
        source = Path(params["source"]).expanduser()
        output = Path(params["output"]).expanduser()
        bits = int(params.get("bits", 8))
    except (KeyError, TypeError, ValueError) as exc:
        raise StepError(f"quantize_rtn needs source (HF folder), output (folder) and bits (8 or 4): {exc}") from exc
    qmax_for(bits)
    if not (source / "config.json").is_file():
        raise StepError(f"{source} is not a Hugging Face model folder (no config.json)")
    if output.exists() and any(output.iterdir()):
        raise StepError(f"{output} already exists and is not empty; choose another output folder")

    progress(0, "loading the model", force=True)
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_grad_enabled(False)
    try:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise StepError(f"transformers could not load {source}: {exc}") from exc
    model.eval()
    print(f"loaded {source} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters)")

    def on_layer(done: int, total: int) -> None:
        progress(5 + 85 * done / total, f"quantizing layer {done}/{total}", force=done == total)

    progress(5, "quantizing", force=True)
    modules = quantize_model(model, bits, on_layer=on_layer)
    n_layers = len({_layer_index(name) for name in modules})
    print(f"quantized {len(modules)} Linear modules in {n_layers} decoder layers to int{bits}")

    progress(90, "saving", force=True)
    work = output.with_name(f".{output.name}.partial")
    shutil.rmtree(work, ignore_errors=True)
    try:
        save_rtn(model, work, bits=bits, modules=modules, source=source)
        if output.exists():
            output.rmdir()  # empty, checked above
        work.rename(output)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    size = folder_size(output)
    progress(100, "done", force=True)
    return {
        "format": "rtn",
        "path": str(output),
        "quantization": f"RTN int{bits} per-row",
        "bits": bits,
        "size_bytes": size,
        "seconds": round(time.monotonic() - started, 2),
        "layers": n_layers,
        "modules": len(modules),
    }
