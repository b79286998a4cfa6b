"""The lines a step prints for the job runner: ``inference.children``'s protocol, rate-limited.

Standard library (and ``inference.children``, which is standard library only): the step's own
child process imports this before anything heavy.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from inference.children import error_line, progress_line, result_line

_last_progress = 0.0


def threads() -> int:
    """CPU threads a step's torch or llama.cpp computes on: ``JOB_THREADS`` from the worker's
    environment, else every core. Set it where a jobs worker shares the machine: torch's OpenMP
    threads meet at every parallel region, so with more threads than free cores each region waits
    for a descheduled one (a small training loop here: 246 ms a step on 2 threads alone, 720 ms on
    2 threads beside a busy process, 465 ms on 1 thread beside it)."""
    value = os.environ.get("JOB_THREADS", "").strip()
    if value:
        try:
            count = int(value)
        except ValueError:
            raise StepError(f"JOB_THREADS must be a whole number of threads, not {value!r}") from None
        if count < 1:
            raise StepError(f"JOB_THREADS must be at least 1, not {count}")
        return count
    return os.cpu_count() or 1


def progress(percent: float, stage: str = "", *, force: bool = False, metrics: dict[str, Any] | None = None) -> None:
    """Report ``percent`` (0-100) done and the current stage; at most a few lines a second.

    ``metrics`` (always sent) are the job's live numbers: a fine-tune's ``step``, ``steps``,
    ``loss``; the runner keeps the latest and a history of ``loss`` by ``step``."""
    global _last_progress
    now = time.monotonic()
    if not force and metrics is None and now - _last_progress < 0.25:
        return
    _last_progress = now
    print(progress_line(percent, stage, metrics=metrics), flush=True)


def log(text: str) -> None:
    print(text, flush=True)


def result(payload: dict[str, Any]) -> None:
    print(result_line(payload), flush=True)


class StepError(Exception):
    """A step failed for a reason a person can act on; the message is shown as the job's error."""


def fail(message: str) -> None:
    print(error_line(message), file=sys.stderr, flush=True)
    raise SystemExit(3)


# A model folder's tokenizer and chat files, copied verbatim from a step's source to what it
# makes: the source's tokenizer was fixed by hand and must never be derived again.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
)


def tokenizer_files_copy(source: Any, target: Any, *, also: tuple[str, ...] = ()) -> list[str]:
    """Copy the tokenizer files (and ``also``) that exist in ``source`` into ``target``."""
    import shutil
    from pathlib import Path

    copied = []
    for name in (*also, *TOKENIZER_FILES):
        if (Path(source) / name).is_file():
            shutil.copyfile(Path(source) / name, Path(target) / name)
            copied.append(name)
    return copied
