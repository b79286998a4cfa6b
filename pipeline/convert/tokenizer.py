"""The tokenizer fix: the tokenizer transformers derives from a GGUF, rewritten to what the GGUF
says it is (plain JSON; no heavy imports)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


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
