"""A small client for the platform's REST API and websocket, as an API user would write it."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from websockets.sync.client import ClientConnection, connect


def api(base: str, token: str | None, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Token {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, raw.decode(errors="replace")


def ws_open(base: str, session_id: int, token: str | None, **headers: str) -> ClientConnection:
    extra = dict(headers)
    if token:
        extra["Authorization"] = f"Token {token}"
    return connect(f"{base}/ws/sessions/{session_id}/", additional_headers=extra, open_timeout=20)


@dataclass
class Reply:
    """What one client saw of one reply."""

    message_id: int
    snapshot_text: str = ""
    snapshot_seq: int = 0
    deltas: list[tuple[int, str]] = field(default_factory=list)
    done: dict[str, Any] | None = None

    @property
    def text(self) -> str:
        return self.snapshot_text + "".join(t for _, t in self.deltas)

    @property
    def seqs(self) -> list[int]:
        return [s for s, _ in self.deltas]


class Watcher:
    """Reads one websocket and sorts its events by reply."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self.replies: dict[int, Reply] = {}
        self.snapshot: dict[str, Any] | None = None

    def recv(self, timeout: float = 60) -> dict[str, Any]:
        event: dict[str, Any] = json.loads(self.ws.recv(timeout=timeout))
        self.events.append(event)
        kind = event["type"]
        if kind == "session":
            self.snapshot = event
            for m in event["messages"]:
                if m["role"] == "assistant":
                    self.replies[m["id"]] = Reply(m["id"], snapshot_text=m["content"], snapshot_seq=m["seq"])
        elif kind == "message" and event["message"]["role"] == "assistant":
            self.replies.setdefault(event["message"]["id"], Reply(event["message"]["id"]))
        elif kind == "delta":
            self.replies.setdefault(event["message_id"], Reply(event["message_id"])).deltas.append(
                (event["seq"], event["text"])
            )
        elif kind == "done":
            self.replies.setdefault(event["message_id"], Reply(event["message_id"])).done = event
        return event

    def until(self, predicate: Any, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"not seen in {timeout}s; last events: {self.events[-5:]}")
            event = self.recv(timeout=left)
            if predicate(event):
                return event

    def first_reply_id(self) -> int:
        event = self.until(lambda e: e["type"] == "message" and e["message"]["role"] == "assistant")
        return int(event["message"]["id"])

    def until_done(self, message_id: int, timeout: float = 180) -> Reply:
        reply = self.replies.get(message_id)
        if reply is None or reply.done is None:
            self.until(lambda e: e["type"] == "done" and e["message_id"] == message_id, timeout)
        return self.replies[message_id]

    def close(self) -> None:
        self.ws.close()


def send(ws: ClientConnection, **payload: Any) -> None:
    ws.send(json.dumps(payload))
