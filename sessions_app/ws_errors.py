"""How a websocket says what went wrong: a refusal as an ``error`` event (``error_event``), and
handshakes and connections that meet an outage ending cleanly (``UnavailableMiddleware``).

A service's refusal (``inference.errors.PlatformError``) becomes ``{"type": "error", "code",
"message"}``, the message as the service wrote it: the socket has no form field to show it against.

Without this, a Redis or PostgreSQL error anywhere under a websocket (the token lookup, the
channel layer's ``group_add``, its receive loop) escapes to daphne, which answers the handshake
with HTTP 500 or drops the socket with 1011. Here it becomes an ``error`` event (a code and a
message saying which service is away) and a close with code 4503; the socket is accepted first
when need be, since a close before the accept cannot carry either.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from inference.errors import PlatformError
from sessions_app.unavailable import UNAVAILABLE_ERRORS, WS_CLOSE_UNAVAILABLE, unavailable_reason

log = logging.getLogger(__name__)


def error_event(exc: PlatformError) -> dict[str, Any]:
    """The ``error`` event that answers a frame a service refused; nothing was changed."""
    return {"type": "error", "code": exc.code, "message": exc.message}


class UnavailableMiddleware:
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] != "websocket":
            return await self.inner(scope, receive, send)
        state = {"accepted": False, "closed": False}

        async def tracked_send(message: dict[str, Any]) -> None:
            if message["type"] == "websocket.accept":
                state["accepted"] = True
            elif message["type"] == "websocket.close":
                state["closed"] = True
            await send(message)

        try:
            return await self.inner(scope, receive, tracked_send)
        except UNAVAILABLE_ERRORS as exc:
            code, message, reason = unavailable_reason(exc)
            log.warning("websocket %s ended: %s (%s: %s)", scope.get("path"), reason, type(exc).__name__, exc)
            if state["closed"]:
                return None
            try:
                if not state["accepted"]:
                    await send({"type": "websocket.accept"})
                await send({"type": "websocket.send", "text": json.dumps(
                    {"type": "error", "code": code, "message": message}
                )})  # fmt: skip
                await send({"type": "websocket.close", "code": WS_CLOSE_UNAVAILABLE, "reason": reason})
            except Exception as send_exc:  # the client went away meanwhile
                log.debug("could not tell the client: %s", send_exc)
            return None
