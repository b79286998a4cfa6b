"""The websocket of the job dashboard: ``/ws/jobs/`` (staff only).

Server -> client::

    {"type": "job", "job": {...}, "lines": ["new log lines", ...]}   a job changed (pipeline.jobs.events)
    {"type": "artifacts"}                                            artifacts changed: read /api/artifacts/
    {"type": "pong"}                                                 the answer to {"type": "ping"}
    {"type": "error", "code": "...", "message": "..."}

The socket carries only what changed; the page reads the current state over the REST API when it
(re)connects, so an event lost while it was away costs nothing.

A socket opened with an API token closes (a ``token_revoked`` error event, then code 4401) the
moment the token is revoked, and when it expires: as the chat socket does (``TokenBound``).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any, Protocol

from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.utils import timezone
from redis.exceptions import RedisError

from pipeline.jobs.events import GROUP

log = logging.getLogger(__name__)

WS_CLOSE_SIGNED_OUT = 4401
WS_CLOSE_NOT_STAFF = 4403


class ScopeToken(Protocol):
    """What the websocket auth middleware puts in ``scope["api_token"]`` (an upper layer's token
    model): the group its revocation is announced to (event ``token.revoked``), and its expiry."""

    group_name: str
    expires_at: datetime | None


class TokenBound(AsyncJsonWebsocketConsumer):
    """A socket that lives no longer than the API token it was opened with (none with a cookie).

    ``token_watch`` (in ``connect``) joins the token's group, where revoking it sends
    ``token.revoked``, and arms a timer for its expiry; either sends an error event and closes
    with 4401, the code of a refused login, so the client stops reconnecting."""

    token_group: str = ""
    _token_expiry: asyncio.TimerHandle | None = None

    async def token_watch(self) -> None:
        token: ScopeToken | None = self.scope.get("api_token")
        if token is None:
            return
        self.token_group = token.group_name
        await self.channel_layer.group_add(self.token_group, self.channel_name)
        if token.expires_at is not None:
            delay = max(0.0, (token.expires_at - timezone.now()).total_seconds())
            self._token_expiry = asyncio.get_running_loop().call_later(
                delay, lambda: asyncio.ensure_future(self._token_ended())
            )

    async def token_unwatch(self) -> None:
        """In ``disconnect``: cancel the timer and leave the token's group."""
        if self._token_expiry is not None:
            self._token_expiry.cancel()
        if self.token_group:
            try:
                await self.channel_layer.group_discard(self.token_group, self.channel_name)
            except (RedisError, OSError) as exc:  # Redis is away: its group entries expire by themselves
                log.info("leaving the token's group failed: %s", exc)

    async def _token_ended(self) -> None:
        await self.send_json(
            {"type": "error", "code": "token_revoked", "message": "Your API token was revoked or expired."}
        )
        await self.close(code=WS_CLOSE_SIGNED_OUT)

    async def token_revoked(self, event: dict[str, Any]) -> None:
        await self._token_ended()


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
        except (RedisError, OSError) as exc:  # Redis is away: its group entries expire by themselves
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
