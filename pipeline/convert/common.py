"""What the conversion steps share: their error, the export settings, and the cache's layout."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

# Written into an IR folder as the last step of an export; its presence means "complete".
EXPORT_MARKER = ".chatsite-export.json"
# Bumped when the recipe changes in a way that makes older cached exports wrong.
RECIPE_VERSION = 1
# Text whose encode -> decode must come back unchanged (spaces included) after conversion.
ROUND_TRIP_TEXT = "The capital of France is Paris.  Hello , world !\nIt 's 2 o'clock, isn't it ?"

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
