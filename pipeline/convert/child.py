"""Running a step in a child process of ``sys.executable`` (``python -m pipeline.convert``).

Torch and transformers are imported only there, never into the caller; the child prints its
result as one JSON line after ``RESULT_PREFIX``. It runs with the allowlisted environment of
``inference.children.child_env`` and dies with its parent.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

from inference.children import child_env, die_with_parent
from pipeline.convert.common import ConversionError

RESULT_PREFIX = "CHATSITE_RESULT "

# tqdm progress bars, which fill a child's stderr and say nothing about why it failed.
_PROGRESS = re.compile(r"\d+/\d+ \[[^\]]*\]\s*$")


def _tail(text: str | bytes | None, lines: int = 25) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    kept = [line for line in (text or "").splitlines() if line.strip() and not _PROGRESS.search(line)]
    return "\n".join(kept[-lines:])


def run_command(step: str, argv: list[str], *, timeout: float | None) -> str:
    # The allowlisted environment (never the worker's secrets), offline: the GGUF is the only source
    # of weights and tokenizer. The child dies with this process (inference.children).
    env = child_env()
    try:
        proc = subprocess.run(
            die_with_parent(argv), capture_output=True, text=True, env=env, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise ConversionError(step, f"did not finish in {timeout} s", _tail(exc.stderr or exc.stdout)) from None
    except OSError as exc:
        raise ConversionError(step, f"could not start {argv[0]}: {exc}") from None
    if proc.returncode != 0:
        raise ConversionError(step, f"exited with status {proc.returncode}", _tail(proc.stderr or proc.stdout))
    return proc.stdout


def run_step(step: str, args: list[str], *, timeout: float | None) -> dict[str, Any]:
    stdout = run_command(step, [sys.executable, "-m", "pipeline.convert", *args], timeout=timeout)
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            result: dict[str, Any] = json.loads(line[len(RESULT_PREFIX) :])
            return result
    raise ConversionError(step, "the step printed no result", _tail(stdout))
