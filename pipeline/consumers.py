"""The websocket of the job dashboard: ``/ws/jobs/`` (staff only).

Server -> client::

    {"type": "job", "job": {...}, "lines": ["new log lines", ...]}   a job changed (pipeline.jobs.events)
    {"type": "artifacts"}                                            artifacts changed: read /api/artifacts/
    {"type": "pong"}                                                 the answer to {"type": "ping"}
    {"type": "error", "code": "...", "message": "..."}

The socket carries only what changed; the page reads the current state over the REST API when it
(re)connects, so an event lost while it was away costs nothing.

A socket opened with an API token closes (a ``token_revoked`` error event, then code 4401) the
moment the token is revoked, and when it expires, as the chat socket does
(``sessions_app.socket_token.TokenBound``).
"""

from __future__ import annotations

import logging
from typing import Any

from pipeline.jobs.events import GROUP
from sessions_app.socket_token import WS_CLOSE_SIGNED_OUT, TokenBound
from sessions_app.unavailable import UNAVAILABLE_ERRORS

log = logging.getLogger(__name__)

WS_CLOSE_NOT_STAFF = 4403


class JobsConsumer(TokenBound):
    joined = False

    async def connect(self) -> None:
        user = self.scope.get("user")
        refused = None
        if self.scope.get("auth_error") or user is None or not user.is_authenticated:
            refused = WS_CLOSE_SIGNED_OUT
        elif not user.is_staff:
            refused = WS_CLOSE_NOT_STAFF
        if refused is not None:
            # Accepted first: a close before the accept reaches a browser as a bare 1006, and the
            # page needs the code to stop reconnecting and say why.
            await self.accept()
            await self.close(code=refused)
            return
        # An outage here propagates to ws_errors.UnavailableMiddleware: an error event and 4503.
        await self.channel_layer.group_add(GROUP, self.channel_name)
        self.joined = True
        await self.token_watch()
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.token_unwatch()
        if not self.joined:
            return
        try:
            await self.channel_layer.group_discard(GROUP, self.channel_name)
        except UNAVAILABLE_ERRORS as exc:  # Redis is away: its group entries expire by themselves
            log.info("leaving the jobs group failed: %s", exc)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        kind = content.get("type") if isinstance(content, dict) else None
        if kind == "ping":
            await self.send_json({"type": "pong"})
        else:
            await self.send_json(
                {"type": "error", "code": "unknown_type", "message": "This socket only listens; send ping or nothing."}
            )

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        try:
            await super().receive(text_data=text_data, bytes_data=bytes_data)
        except ValueError:  # not JSON (json.JSONDecodeError is a ValueError)
            await self.send_json({"type": "error", "code": "bad_json", "message": "Send JSON text frames."})

    # --- group events -----------------------------------------------------------------------

    async def job_changed(self, event: dict[str, Any]) -> None:
        await self.send_json({"type": "job", "job": event["job"], "lines": event.get("lines") or []})

    async def artifacts_changed(self, event: dict[str, Any]) -> None:
        await self.send_json({"type": "artifacts"})
