"""A resolver a test answers for itself, and a tiny OpenAI-compatible server on loopback."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass
class Resolver:
    """Answers for the names a test gives, one answer per lookup (the last one repeats)."""

    answers: dict[str, list[list[str]]] = field(default_factory=dict)
    lookups: dict[str, int] = field(default_factory=dict)

    def answer(self, name: str, *answers: list[str]) -> None:
        self.answers[name] = list(answers)
        self.lookups[name] = 0


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> Resolver:
    """``socket.getaddrinfo`` answering the test's names; every other name goes to the real one."""
    resolver = Resolver()
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, bytes):
            host = host.decode()
        if host not in resolver.answers:
            return real(host, port, *args, **kwargs)
        queue = resolver.answers[host]
        addresses = queue.pop(0) if len(queue) > 1 else queue[0]
        resolver.lookups[host] += 1
        number = int(port or 0)
        return [
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (a, number, 0, 0))
            if ":" in a
            else (socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, number))
            for a in addresses
        ]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return resolver


@dataclass
class Upstream:
    """A model server on 127.0.0.1: lists one model; chat and /tokenize answer ``status`` with ``body``."""

    port: int
    requests: list[str] = field(default_factory=list)
    status: int = 500
    body: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


@contextmanager
def upstream_server() -> Iterator[Upstream]:
    state = Upstream(port=0)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests.append(f"GET {self.path}")
            self._answer(200, {"object": "list", "data": [{"id": "tiny", "object": "model", "owned_by": "me"}]})

        def do_POST(self) -> None:
            state.requests.append(f"POST {self.path}")
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self._answer(state.status, state.body)

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, name="upstream", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with upstream_server() as state:
        yield state
