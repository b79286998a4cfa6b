"""How the terminal chat looks: colours (or none) and the stats line under a reply."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Palette:
    """ANSI colours, or none. ``readline`` must be told which prompt bytes take no room."""

    enabled: bool
    readline_prompt: bool = False

    def paint(self, code: str, text: str) -> str:
        if not self.enabled:
            return text
        return f"\033[{code}m{text}\033[0m"

    def prompt(self, code: str, text: str) -> str:
        if not (self.enabled and self.readline_prompt):
            return self.paint(code, text)
        return f"\001\033[{code}m\002{text}\001\033[0m\002"


def colours_wanted(*, no_color: bool, force_color: bool, stream: Any) -> bool:
    if force_color:
        return True
    if no_color or os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def stats_line(stats: dict[str, Any]) -> str:
    """A finished reply's numbers, as the chat prints them under it."""
    parts = []
    if stats.get("completion_tokens") is not None:
        parts.append(f"{stats['completion_tokens']} tokens")
    if stats.get("ttft_ms") is not None:
        parts.append(f"TTFT {stats['ttft_ms']:.0f} ms")
    if stats.get("decode_tps") is not None:
        parts.append(f"{stats['decode_tps']:.1f} tokens/s")
    return f"[ {' | '.join(parts)} ]" if parts else ""
