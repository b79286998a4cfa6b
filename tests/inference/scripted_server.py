"""A stand-in OpenAI-compatible server at the edge of the process: it records the body of every
chat request and answers each with the same scripted stream of deltas.

For what a real server cannot show here: the exact body a backend sends (vLLM's own fields,
without starting an engine), and streams no local server produces (parallel tool calls).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL = "scripted"


def content(text: str) -> dict[str, Any]:
    return {"content": text}


def tool_piece(index: int, *, name: str | None = None, arguments: str = "") -> dict[str, Any]:
    """One piece of ``delta.tool_calls`` as OpenAI streams it: the id and name in a call's first."""
    function: dict[str, Any] = {"arguments": arguments}
    piece: dict[str, Any] = {"index": index, "function": function}
    if name is not None:
        function["name"] = name
        piece.update(id=f"call_{index}", type="function")
    return {"tool_calls": [piece]}


@dataclass
class Script:
    deltas: list[dict[str, Any]]
    finish_reason: str = "stop"
    bodies: list[dict[str, Any]] = field(default_factory=list)

    def events(self) -> Iterator[dict[str, Any]]:
        base = {"id": "chatcmpl-scripted", "object": "chat.completion.chunk", "created": 0, "model": MODEL}
        for delta in [{"role": "assistant", "content": ""}, *self.deltas]:
            yield {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
        yield {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": self.finish_reason}]}


def _handler(script: Script) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _json(self, data: Any) -> None:
            body = json.dumps(data).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            models = [{"id": MODEL, "object": "model", "created": 0, "owned_by": "test", "max_model_len": 2048}]
            self._json({"object": "list", "data": models})

        def do_POST(self) -> None:
            script.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            for event in script.events():
                self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
            self.wfile.write(b"data: [DONE]\n\n")
            self.close_connection = True

    return Handler


@contextmanager
def scripted_server(script: Script) -> Iterator[str]:
    """The server's /v1 URL while it runs."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(script))
    # A short poll: shutdown() waits for the loop's next look.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v1"
    finally:
        server.shutdown()
        server.server_close()
