"""Readiness: whether a loopback port is free, the server's ``/health``, and the tail of its log."""

from __future__ import annotations

import os
import socket
import urllib.error
import urllib.request
from pathlib import Path

from inference.vllm_server.command import HOST

HEALTH_TIMEOUT = 2.0
_LOG_TAIL_LINES = 30


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        # As the server binds it: connections left in TIME_WAIT by a dead server do not count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


# The server is on loopback: a proxy from the environment must not come between.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def health_ok(base_url: str, timeout: float = HEALTH_TIMEOUT) -> bool:
    """Whether ``GET /health`` answers 200 (vLLM answers 503 once its engine has died)."""
    try:
        with _DIRECT.open(f"{base_url}/health", timeout=timeout) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def log_tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(line for line in text.splitlines()[-lines:])
