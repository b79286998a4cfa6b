"""GGUF -> Hugging Face folder -> OpenVINO IR, for the ``openvino`` backend.

The steps, each run in a child process of ``sys.executable`` so that torch and transformers are
never imported into the caller (a web process, a worker that only serves models):

1. ``gguf_to_hf``: transformers loads the GGUF with ``gguf_file=`` (dequantized to float32) and
   saves a Hugging Face folder. The tokenizer transformers derives from a GGUF is wrong in ways
   that silently change the text, so it is rewritten from the GGUF's own metadata (see
   ``fix_tokenizer_files``) and checked before going on.
2. ``hf_to_openvino``: ``optimum-cli export openvino`` with NNCF weight compression (int4 with a
   group size, ratio and symmetry, or int8), then the openvino-tokenizers models that
   openvino-genai needs (made here when optimum did not make them), then a tokenizer round trip
   through openvino-genai's own ``Tokenizer``.

Everything runs offline: the children get ``HF_HUB_OFFLINE=1`` and load with
``local_files_only``; nothing is fetched from a hub. ``openvino_ir_from_gguf`` caches the result
outside the repository (``CHATSITE_MODEL_CACHE``, default ``~/.cache/chatsite/models``) and
reuses a folder whose marker file, written last, says it is complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

_PROJECT_ROOT = Path(__file__).resolve().parents[1]
_RESULT_PREFIX = "CHATSITE_RESULT "
# Written into an IR folder as the last step of an export; its presence means "complete".
EXPORT_MARKER = ".chatsite-export.json"
# Bumped when the recipe changes in a way that makes older cached exports wrong.
RECIPE_VERSION = 1
# Never reach a model hub: the GGUF is the only source of weights and tokenizer.
_OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
# Text whose encode -> decode must come back unchanged (spaces included) after conversion.
ROUND_TRIP_TEXT = "The capital of France is Paris.  Hello , world !\nIt 's 2 o'clock, isn't it ?"

# tqdm progress bars, which fill a child's stderr and say nothing about why it failed.
_PROGRESS = re.compile(r"\d+/\d+ \[[^\]]*\]\s*$")

Log = Callable[[str], None]


class ConversionError(RuntimeError):
    """A conversion step failed; ``step`` names it and ``output_tail`` ends its output."""

    def __init__(self, step: str, message: str, output_tail: str = "") -> None:
        text = f"{step}: {message}"
        if output_tail:
            text += f"\n--- last lines of its output ---\n{output_tail}"
        super().__init__(text)
        self.step = step
        self.output_tail = output_tail


@dataclass(frozen=True)
class ExportSettings:
    """NNCF weight compression for ``optimum-cli export openvino``.

    ``group_size`` must divide the model's hidden sizes (SmolLM2-135M: 576 and 1536, so 64 and
    not optimum's default 128); -1 means one scale per output channel. ``ratio`` is the share of
    layers in int4, the rest in int8.
    """

    weight_format: Literal["int4", "int8"] = "int4"
    group_size: int = 64
    ratio: float = 1.0
    sym: bool = False

    def __post_init__(self) -> None:
        if self.weight_format not in ("int4", "int8"):
            raise ValueError(f"weight_format must be int4 or int8, not {self.weight_format!r}")
        if self.group_size != -1 and self.group_size < 1:
            raise ValueError("group_size must be -1 (per channel) or a positive number")
        if not 0 < self.ratio <= 1:
            raise ValueError("ratio must be in (0, 1]")

    def slug(self) -> str:
        if self.weight_format == "int8":
            return "int8"
        sym = "sym" if self.sym else "asym"
        return f"int4-g{self.group_size}-r{self.ratio:g}-{sym}"

    def optimum_args(self) -> list[str]:
        args = ["--weight-format", self.weight_format]
        if self.weight_format == "int4":
            args += ["--group-size", str(self.group_size), "--ratio", str(self.ratio)]
            if self.sym:
                args.append("--sym")
        return args


# The bundled SmolLM2-135M: all layers int4 with groups of 64 kept its greedy answers.
BUNDLED_EXPORT = ExportSettings()


def model_cache_root() -> Path:
    """Where converted models are kept: ``$CHATSITE_MODEL_CACHE`` or ``~/.cache/chatsite/models``."""
    configured = os.environ.get("CHATSITE_MODEL_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "chatsite" / "models"


def gguf_fingerprint(gguf_path: Path) -> str:
    """A short digest of a GGUF: its size and its first and last 16 MiB (cheap on a 10 GB file)."""
    size = gguf_path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    window = 16 * 1024 * 1024
    with gguf_path.open("rb") as fh:
        digest.update(fh.read(window))
        if size > window:
            fh.seek(max(window, size - window))
            digest.update(fh.read(window))
    return digest.hexdigest()[:12]


def export_info(ir_dir: Path) -> dict[str, Any] | None:
    """The marker of a complete export in ``ir_dir``, or None when the folder is not one."""
    marker = Path(ir_dir) / EXPORT_MARKER
    try:
        info: dict[str, Any] = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    return info


def ir_size_bytes(ir_dir: Path) -> int:
    return sum(f.stat().st_size for f in Path(ir_dir).rglob("*") if f.is_file())


# --- The steps, as the caller sees them -------------------------------------------------------


def gguf_to_hf(gguf_path: Path | str, out_dir: Path | str, *, timeout: float | None = 3600) -> dict[str, Any]:
    """Write a Hugging Face folder (float32 weights, fixed tokenizer) for a GGUF file.

    Returns what the child reports: the tokenizer fixes it made and the checks it ran.
    """
    gguf_path, out_dir = Path(gguf_path).resolve(), Path(out_dir).resolve()
    if not gguf_path.is_file():
        raise ConversionError("gguf_to_hf", f"GGUF file not found: {gguf_path}")
    return _run_child("gguf_to_hf", ["gguf-to-hf", str(gguf_path), str(out_dir)], timeout=timeout)


def hf_to_openvino(
    hf_dir: Path | str,
    out_dir: Path | str,
    *,
    weight_format: Literal["int4", "int8"] = "int4",
    group_size: int = 64,
    ratio: float = 1.0,
    sym: bool = False,
    expected_eos_token_id: int | None = None,
    timeout: float | None = 3600,
) -> dict[str, Any]:
    """Export a Hugging Face folder to an OpenVINO IR folder that openvino-genai can load."""
    settings = ExportSettings(weight_format=weight_format, group_size=group_size, ratio=ratio, sym=sym)
    hf_dir, out_dir = Path(hf_dir).resolve(), Path(out_dir).resolve()
    if not (hf_dir / "config.json").is_file():
        raise ConversionError("optimum_export", f"not a Hugging Face model folder (no config.json): {hf_dir}")
    argv = [
        sys.executable, "-m", "inference.convert", "optimum-cli", "export", "openvino",
        "--model", str(hf_dir), "--task", "text-generation-with-past",
        *settings.optimum_args(), str(out_dir),
    ]  # fmt: skip
    _run("optimum_export", argv, timeout=timeout)
    if not (out_dir / "openvino_model.xml").is_file():
        raise ConversionError("optimum_export", f"optimum-cli finished but wrote no openvino_model.xml in {out_dir}")
    made_tokenizer = False
    if not _has_ov_tokenizers(out_dir):
        # optimum only warns when openvino-tokenizers cannot convert; do it here so the error shows.
        _run_child("convert_tokenizer", ["tokenizer", str(hf_dir), str(out_dir)], timeout=timeout)
        made_tokenizer = True
    check_args = ["verify-ir", str(out_dir)]
    if expected_eos_token_id is not None:
        check_args.append(str(expected_eos_token_id))
    checks = _run_child("verify_ir", check_args, timeout=timeout)
    return {"settings": asdict(settings), "tokenizer_made_here": made_tokenizer, "checks": checks}


def openvino_ir_from_gguf(
    gguf_path: Path | str,
    *,
    settings: ExportSettings = BUNDLED_EXPORT,
    out_dir: Path | str | None = None,
    cache_root: Path | str | None = None,
    log: Log | None = None,
) -> Path:
    """The OpenVINO IR folder for a GGUF, converting it unless a complete one is already there.

    Without ``out_dir`` the folder lives under ``cache_root`` (default ``model_cache_root()``),
    named after the GGUF, its fingerprint and the settings. The work happens in a sibling
    folder that is renamed into place at the end, so a reader never sees a half-written export.
    """
    say = log or (lambda _msg: None)
    gguf_path = Path(gguf_path).resolve()
    if not gguf_path.is_file():
        raise ConversionError("gguf_to_hf", f"GGUF file not found: {gguf_path}")
    fingerprint = gguf_fingerprint(gguf_path)
    if out_dir is None:
        root = Path(cache_root).expanduser() if cache_root else model_cache_root()
        out = root / f"{gguf_path.stem}-{fingerprint}-{settings.slug()}-ov"
    else:
        out = Path(out_dir).expanduser().resolve()
    info = export_info(out)
    if info is not None:
        same = info.get("gguf_fingerprint") == fingerprint and info.get("settings") == asdict(settings)
        if same and info.get("recipe_version") == RECIPE_VERSION:
            say(f"reusing the complete export in {out}")
            return out
        if not (same and out_dir is None):
            raise ConversionError(
                "prepare", f"{out} holds an export of another GGUF, settings or recipe; choose another folder"
            )
        say(f"the cached export in {out} was made by an older recipe; converting again")
        shutil.rmtree(out)
    if out.exists() and any(out.iterdir()):
        raise ConversionError("prepare", f"{out} exists, is not empty and holds no complete export")

    out.parent.mkdir(parents=True, exist_ok=True)
    work = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    started = time.monotonic()
    try:
        say(f"1/2 GGUF -> Hugging Face folder ({gguf_path.name})")
        hf_report = gguf_to_hf(gguf_path, work / "hf")
        say(f"    tokenizer fixes: {', '.join(hf_report['fixes']) or 'none needed'}")
        say(f"2/2 Hugging Face -> OpenVINO IR ({settings.slug()})")
        ov_report = hf_to_openvino(
            work / "hf",
            work / "ir",
            weight_format=settings.weight_format,
            group_size=settings.group_size,
            ratio=settings.ratio,
            sym=settings.sym,
            expected_eos_token_id=hf_report["gguf"]["eos_token_id"],
        )
        seconds = round(time.monotonic() - started, 1)
        marker = {
            "recipe_version": RECIPE_VERSION,
            "gguf": str(gguf_path),
            "gguf_fingerprint": fingerprint,
            "settings": asdict(settings),
            "seconds": seconds,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "tokenizer_fixes": hf_report["fixes"],
            "versions": ov_report["checks"].pop("versions", {}),
            "checks": ov_report["checks"],
        }
        (work / "ir" / EXPORT_MARKER).write_text(json.dumps(marker, indent=2))
        try:
            if out.exists():
                out.rmdir()  # empty, checked above
            os.replace(work / "ir", out)
        except OSError:
            if export_info(out) is None:
                raise
            say("another process finished the same export first; using its folder")
        say(f"done in {seconds} s: {out}")
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def openvino_ir_for_bundled(cache_root: Path | str | None = None, *, log: Log | None = None) -> Path:
    """The bundled SmolLM2 GGUF as an int4 OpenVINO IR, converted once and cached."""
    from inference.bundled import bundled_model_path

    return openvino_ir_from_gguf(bundled_model_path(), settings=BUNDLED_EXPORT, cache_root=cache_root, log=log)


# --- The tokenizer fix (plain JSON; no heavy imports) -------------------------------------------


def gguf_metadata(gguf_path: Path) -> dict[str, Any]:
    """The tokenizer facts a GGUF states about itself."""
    from gguf import GGUFReader

    reader = GGUFReader(str(gguf_path))

    def value(key: str, default: Any = None) -> Any:
        field = reader.fields.get(key)
        return default if field is None else field.contents()

    tokens: list[str] = value("tokenizer.ggml.tokens", [])
    eos_id = value("tokenizer.ggml.eos_token_id")
    bos_id = value("tokenizer.ggml.bos_token_id")
    pad_id = value("tokenizer.ggml.padding_token_id")
    return {
        "architecture": value("general.architecture"),
        "tokenizer_model": value("tokenizer.ggml.model"),
        "pre_tokenizer": value("tokenizer.ggml.pre"),
        "vocab_size": len(tokens),
        "eos_token_id": eos_id,
        "eos_token": tokens[eos_id] if eos_id is not None else None,
        "bos_token_id": bos_id,
        "bos_token": tokens[bos_id] if bos_id is not None else None,
        "pad_token_id": pad_id,
        "pad_token": tokens[pad_id] if pad_id is not None else None,
        "add_bos_token": bool(value("tokenizer.ggml.add_bos_token", False)),
        "chat_template": value("tokenizer.chat_template"),
        "context_length": value(f"{value('general.architecture')}.context_length"),
    }


def _byte_level(**extra: Any) -> dict[str, Any]:
    return {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True, **extra}


def fix_tokenizer_files(hf_dir: Path, meta: dict[str, Any]) -> list[str]:
    """Rewrite the tokenizer transformers derived from a GGUF to what the GGUF says it is.

    For a byte-level BPE ("gpt2") GGUF, as SmolLM2's: the fast tokenizer class (transformers 5
    rebuilds a named class's pipeline and drops every space), a plain ByteLevel decoder and no
    normalizer (openvino-tokenizers cannot convert the others), the GGUF's eos token, and
    add_bos_token as the GGUF says with a ByteLevel post-processor instead of a template that
    puts the bos token in front of every encode. Returns what was changed.
    """
    fixes: list[str] = []
    tok_json_path = hf_dir / "tokenizer.json"
    cfg_path = hf_dir / "tokenizer_config.json"
    tok = json.loads(tok_json_path.read_text())
    cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
    byte_level_bpe = meta.get("tokenizer_model") == "gpt2"

    if cfg.get("tokenizer_class") != "PreTrainedTokenizerFast":
        fixes.append(f"tokenizer_class {cfg.get('tokenizer_class')} -> PreTrainedTokenizerFast")
        cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    if byte_level_bpe:
        decoder = tok.get("decoder") or {}
        if decoder.get("type") != "ByteLevel":
            fixes.append(f"decoder {decoder.get('type')} -> ByteLevel")
            tok["decoder"] = _byte_level()
        if tok.get("normalizer") is not None:
            fixes.append(f"normalizer {tok['normalizer'].get('type')} -> none")
            tok["normalizer"] = None
        post = tok.get("post_processor") or {}
        if not meta["add_bos_token"] and post.get("type") != "ByteLevel":
            fixes.append(f"post_processor {post.get('type')} -> ByteLevel (no bos on encode)")
            tok["post_processor"] = _byte_level(trim_offsets=False)
    fixes += _drop_tokens_beyond_vocab(tok, cfg, meta["vocab_size"])
    for key, wanted in (("add_prefix_space", False), ("clean_up_tokenization_spaces", False)):
        # A byte-level BPE encodes spaces itself; either flag changes the text on a round trip.
        if byte_level_bpe and cfg.get(key, wanted) != wanted:
            fixes.append(f"{key} {cfg[key]} -> {wanted}")
            cfg[key] = wanted
    if cfg.get("add_bos_token", None) != meta["add_bos_token"]:
        fixes.append(f"add_bos_token {cfg.get('add_bos_token')} -> {meta['add_bos_token']}")
        cfg["add_bos_token"] = meta["add_bos_token"]
    for role in ("eos", "bos", "pad"):
        token, token_id = meta.get(f"{role}_token"), meta.get(f"{role}_token_id")
        if token and _token_text(cfg.get(f"{role}_token")) != token:
            fixes.append(f"{role}_token {_token_text(cfg.get(f'{role}_token'))!r} -> {token!r}")
            cfg[f"{role}_token"] = token
        if f"{role}_token_id" in cfg and token_id is not None and cfg[f"{role}_token_id"] != token_id:
            fixes.append(f"{role}_token_id {cfg[f'{role}_token_id']} -> {token_id}")
            cfg[f"{role}_token_id"] = token_id
    if meta.get("chat_template") and not _saved_chat_template(hf_dir, cfg):
        fixes.append("chat_template from the GGUF")
        cfg["chat_template"] = meta["chat_template"]

    tok_json_path.write_text(json.dumps(tok, ensure_ascii=False, indent=2))
    cfg_path.write_text(json.dumps(cfg, ensure_ascii=False, indent=2))
    fixes += _fix_special_tokens_map(hf_dir, meta)
    fixes += _fix_model_token_ids(hf_dir, meta)
    return fixes


def _drop_tokens_beyond_vocab(tok: dict[str, Any], cfg: dict[str, Any], vocab_size: int) -> list[str]:
    """Remove special tokens the GGUF does not have (transformers adds CodeLlama's infill ones).

    Their ids lie past the model's embedding matrix, so producing one would crash the model.
    """
    extra = [t for t in tok.get("added_tokens", []) if t["id"] >= vocab_size]
    if not extra:
        return []
    dropped = {t["content"] for t in extra}
    tok["added_tokens"] = [t for t in tok["added_tokens"] if t["id"] < vocab_size]
    for key in [k for k, v in cfg.items() if k.endswith("_token") and _token_text(v) in dropped]:
        del cfg[key]
    if isinstance(cfg.get("extra_special_tokens"), list):
        kept = [t for t in cfg["extra_special_tokens"] if _token_text(t) not in dropped]
        if kept:
            cfg["extra_special_tokens"] = kept
        else:
            del cfg["extra_special_tokens"]
    decoder = cfg.get("added_tokens_decoder")
    if isinstance(decoder, dict):
        cfg["added_tokens_decoder"] = {k: v for k, v in decoder.items() if int(k) < vocab_size}
    return [f"dropped tokens the GGUF lacks: {', '.join(sorted(dropped))}"]


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):  # an AddedToken as saved by older transformers
        content = value.get("content")
        return str(content) if content is not None else None
    return value if isinstance(value, str) else None


def _saved_chat_template(hf_dir: Path, cfg: dict[str, Any]) -> bool:
    return bool(cfg.get("chat_template")) or (hf_dir / "chat_template.jinja").is_file()


def _fix_special_tokens_map(hf_dir: Path, meta: dict[str, Any]) -> list[str]:
    path = hf_dir / "special_tokens_map.json"
    if not path.is_file():
        return []
    data = json.loads(path.read_text())
    fixes = []
    for role in ("eos", "bos"):
        token = meta.get(f"{role}_token")
        if token and role + "_token" in data and _token_text(data[role + "_token"]) != token:
            fixes.append(f"special_tokens_map {role}_token -> {token!r}")
            data[role + "_token"] = token
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2))
    return fixes


def _fix_model_token_ids(hf_dir: Path, meta: dict[str, Any]) -> list[str]:
    """The eos/bos ids in config.json and generation_config.json, where generation stops."""
    fixes = []
    for name in ("config.json", "generation_config.json"):
        path = hf_dir / name
        if not path.is_file():
            continue
        data = json.loads(path.read_text())
        for role in ("eos", "bos"):
            wanted = meta.get(f"{role}_token_id")
            if wanted is not None and data.get(f"{role}_token_id") != wanted:
                fixes.append(f"{name} {role}_token_id {data.get(f'{role}_token_id')} -> {wanted}")
                data[f"{role}_token_id"] = wanted
        path.write_text(json.dumps(data, indent=2))
    return fixes


# --- Children ---------------------------------------------------------------------------------


def _has_ov_tokenizers(ir_dir: Path) -> bool:
    return (ir_dir / "openvino_tokenizer.xml").is_file() and (ir_dir / "openvino_detokenizer.xml").is_file()


def _tail(text: str | bytes | None, lines: int = 25) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    kept = [line for line in (text or "").splitlines() if line.strip() and not _PROGRESS.search(line)]
    return "\n".join(kept[-lines:])


def _run(step: str, argv: list[str], *, timeout: float | None) -> str:
    env = {**os.environ, **_OFFLINE_ENV}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PROJECT_ROOT), os.environ.get("PYTHONPATH")) if p)
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ConversionError(step, f"did not finish in {timeout} s", _tail(exc.stderr or exc.stdout)) from None
    except OSError as exc:
        raise ConversionError(step, f"could not start {argv[0]}: {exc}") from None
    if proc.returncode != 0:
        raise ConversionError(step, f"exited with status {proc.returncode}", _tail(proc.stderr or proc.stdout))
    return proc.stdout


def _run_child(step: str, args: list[str], *, timeout: float | None) -> dict[str, Any]:
    stdout = _run(step, [sys.executable, "-m", "inference.convert", *args], timeout=timeout)
    for line in reversed(stdout.splitlines()):
        if line.startswith(_RESULT_PREFIX):
            result: dict[str, Any] = json.loads(line[len(_RESULT_PREFIX) :])
            return result
    raise ConversionError(step, "the step printed no result", _tail(stdout))


def _child_gguf_to_hf(gguf_path: Path, out_dir: Path) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    meta = gguf_metadata(gguf_path)
    if meta["tokenizer_model"] != "gpt2":
        # The fixes below are written for byte-level BPE; others are converted but flagged.
        print(f"warning: tokenizer model {meta['tokenizer_model']!r} is not byte-level BPE", file=sys.stderr)
    load = {"gguf_file": gguf_path.name, "local_files_only": True}
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), **load)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), dtype=torch.float32, **load)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    del model
    fixes = fix_tokenizer_files(out_dir, meta)
    checks = _check_hf_tokenizer(out_dir, meta)
    return {"gguf": {k: v for k, v in meta.items() if k != "chat_template"}, "fixes": fixes, "checks": checks}


def _check_hf_tokenizer(hf_dir: Path, meta: dict[str, Any]) -> dict[str, Any]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(hf_dir), local_files_only=True)
    problems = []
    ids = tok.encode(ROUND_TRIP_TEXT, add_special_tokens=True)
    back = tok.decode(ids, skip_special_tokens=False)
    if back != ROUND_TRIP_TEXT:
        problems.append(f"round trip changed the text: {back!r}")
    if meta["bos_token_id"] is not None and not meta["add_bos_token"] and ids[:1] == [meta["bos_token_id"]]:
        problems.append("encode adds the bos token")
    if tok.eos_token_id != meta["eos_token_id"]:
        problems.append(f"eos id {tok.eos_token_id}, the GGUF says {meta['eos_token_id']}")
    if len(tok) != meta["vocab_size"]:
        problems.append(f"vocabulary of {len(tok)}, the GGUF has {meta['vocab_size']}")
    if not tok.chat_template:
        problems.append("no chat template")
    if problems:
        raise SystemExit("the converted tokenizer disagrees with the GGUF: " + "; ".join(problems))
    return {"round_trip_ids": len(ids), "class": type(tok).__name__}


def _child_convert_tokenizer(hf_dir: Path, ir_dir: Path) -> dict[str, Any]:
    import openvino
    from openvino_tokenizers import convert_tokenizer
    from transformers import AutoTokenizer

    hf_tok = AutoTokenizer.from_pretrained(str(hf_dir), local_files_only=True)
    ov_tok, ov_detok = convert_tokenizer(hf_tok, with_detokenizer=True)
    openvino.save_model(ov_tok, str(ir_dir / "openvino_tokenizer.xml"))
    openvino.save_model(ov_detok, str(ir_dir / "openvino_detokenizer.xml"))
    return {"written": ["openvino_tokenizer.xml", "openvino_detokenizer.xml"]}


def _child_verify_ir(ir_dir: Path, eos_token_id: int | None) -> dict[str, Any]:
    from importlib import metadata

    import openvino_genai

    tok = openvino_genai.Tokenizer(str(ir_dir))
    ids = tok.encode(ROUND_TRIP_TEXT, add_special_tokens=False).input_ids.data[0].tolist()
    back = tok.decode(ids)
    problems = []
    if back != ROUND_TRIP_TEXT:
        problems.append(f"round trip changed the text: {back!r}")
    if eos_token_id is not None and tok.get_eos_token_id() != eos_token_id:
        problems.append(f"eos id {tok.get_eos_token_id()}, expected {eos_token_id}")
    if not tok.chat_template:
        problems.append("no chat template")
    if problems:
        raise SystemExit("the OpenVINO tokenizer is wrong: " + "; ".join(problems))
    versions = {}
    for dist in ("openvino", "openvino-genai", "openvino-tokenizers", "optimum-intel", "nncf", "transformers"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return {"round_trip_ids": len(ids), "eos_token_id": tok.get_eos_token_id(), "versions": versions}


def _shelve_broken_torchvision() -> None:
    """Treat a torchvision that cannot load as not installed.

    transformers imports torchvision whenever it is installed, and one built for another torch
    (PyPI's CUDA wheel beside the CPU torch) fails with "operator torchvision::nms does not
    exist", which breaks every transformers import. Text models never use it.
    """
    try:
        import torchvision  # noqa: F401
    except ImportError:
        return
    except Exception as exc:  # RuntimeError / OSError from its compiled operators
        print(f"warning: ignoring torchvision, which cannot load here: {exc}", file=sys.stderr)
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        sys.modules["torchvision"] = None  # type: ignore[assignment]  # makes find_spec say "absent"


def _main(argv: list[str]) -> int:
    step, *args = argv
    result: dict[str, Any]
    if step in ("gguf-to-hf", "tokenizer", "optimum-cli"):
        _shelve_broken_torchvision()
    if step == "optimum-cli":
        from optimum.commands.optimum_cli import main as optimum_main

        sys.argv = ["optimum-cli", *args]
        optimum_main()
        return 0
    if step == "gguf-to-hf":
        result = _child_gguf_to_hf(Path(args[0]), Path(args[1]))
    elif step == "tokenizer":
        result = _child_convert_tokenizer(Path(args[0]), Path(args[1]))
    elif step == "verify-ir":
        result = _child_verify_ir(Path(args[0]), int(args[1]) if len(args) > 1 else None)
    else:
        print(f"unknown step {step!r}", file=sys.stderr)
        return 2
    print(_RESULT_PREFIX + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
