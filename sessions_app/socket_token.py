"""A websocket that lives no longer than the API token it was opened with: the chat socket and the
job dashboard's socket both close (a ``token_revoked`` error event, then code 4401) the moment the
token is revoked, and when it expires."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any, Protocol

from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.utils import timezone

from sessions_app.unavailable import UNAVAILABLE_ERRORS

log = logging.getLogger(__name__)

WS_CLOSE_SIGNED_OUT = 4401


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
            except UNAVAILABLE_ERRORS as exc:  # Redis is away: its group entries expire by themselves
                log.info("leaving the token's group failed: %s", exc)

    async def _token_ended(self) -> None:
        await self.send_json(
            {"type": "error", "code": "token_revoked", "message": "Your API token was revoked or expired."}
        )
        await self.close(code=WS_CLOSE_SIGNED_OUT)

    async def token_revoked(self, event: dict[str, Any]) -> None:
        await self._token_ended()
