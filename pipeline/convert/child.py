"""Running a step in a child process of ``sys.executable`` (``python -m pipeline.convert``).

Torch and transformers are imported only there, never into the caller; the child prints its
result as a ``CHATSITE_RESULT`` line (``inference.children``'s protocol). It runs with the
allowlisted environment of ``inference.children.child_env``, in its own process group (a timeout
ends the processes it started too), and dies with its parent.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from inference.children import child_env, group_stop, is_progress_bar, lines_follow, spawn
from pipeline.convert.common import ConversionError

# How long a child that ran out of time gets to end after SIGTERM before SIGKILL.
_STOP_GRACE = 5.0


def _tail(text: str | bytes | None, lines: int = 25) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    kept = [line for line in (text or "").splitlines() if line.strip() and not is_progress_bar(line)]
    return "\n".join(kept[-lines:])


def run_command(step: str, argv: list[str], *, timeout: float | None) -> str:
    """Run ``argv`` to its end and return its stdout; ``ConversionError`` with its output's tail
    when it fails, cannot start or runs past ``timeout`` seconds."""
    # The allowlisted environment (never the worker's secrets), offline: the GGUF is the only source
    # of weights and tokenizer. Started from this thread, which waits for it: it dies with it.
    try:
        proc = spawn(argv, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as exc:
        raise ConversionError(step, f"could not start {argv[0]}: {exc}") from None
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        group_stop(proc, grace=_STOP_GRACE)
        stdout, stderr = proc.communicate()
        raise ConversionError(step, f"did not finish in {timeout} s", _tail(stderr or stdout)) from None
    except BaseException:
        group_stop(proc, grace=_STOP_GRACE)
        raise
    out, err = stdout.decode("utf-8", "replace"), stderr.decode("utf-8", "replace")
    if proc.returncode != 0:
        raise ConversionError(step, f"exited with status {proc.returncode}", _tail(err or out))
    return out


def run_step(step: str, args: list[str], *, timeout: float | None) -> dict[str, Any]:
    stdout = run_command(step, [sys.executable, "-m", "pipeline.convert", *args], timeout=timeout)
    result = lines_follow(stdout.splitlines()).result
    if result is None:
        raise ConversionError(step, "the step printed no result", _tail(stdout))
    return result
