"""Websocket authentication and origin checks.

Browsers authenticate with the session cookie (Channels' AuthMiddlewareStack). API clients send
``Authorization: Token <key>`` on the handshake; a token in the URL is never accepted, because
URLs end up in logs.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
from django.conf import settings
from django.http.request import validate_host

from sessions_app.tokens import TokenRejected, token_from_header


@database_sync_to_async
def _token_for(header: bytes) -> Any:
    """The token the header names, or False when the header names a bad one."""
    try:
        return token_from_header(header)
    except TokenRejected:
        return False


class TokenHeaderAuthMiddleware(BaseMiddleware):
    """Sets ``scope["user"]`` from an ``Authorization: Token`` header, when one is sent."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        headers = dict(scope.get("headers") or [])
        raw = headers.get(b"authorization", b"")
        if raw.strip():
            token = await _token_for(raw)
            scope = dict(scope)
            if token:
                scope["user"] = token.user
                scope["api_token"] = token
            else:
                # A bad token must not fall back to a cookie: say so by leaving no user.
                scope["auth_error"] = "invalid_token"
        return await super().__call__(scope, receive, send)


class OriginCheckMiddleware(BaseMiddleware):
    """Refuse handshakes whose Origin is not this site (cross-site websocket hijacking).

    Browsers always send Origin on a websocket handshake; API clients usually send none, and
    they authenticate with a token header that a hostile page cannot set.
    """

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        headers = dict(scope.get("headers") or [])
        origin = headers.get(b"origin")
        if origin is not None and not self.origin_allowed(origin.decode("latin-1")):
            await send({"type": "websocket.close", "code": 4403})
            return None
        return await super().__call__(scope, receive, send)

    @staticmethod
    def origin_allowed(origin: str) -> bool:
        if origin in settings.WEBSOCKET_ALLOWED_ORIGINS:
            return True
        parsed = urlparse(origin)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            return False
        host = parsed.hostname
        return validate_host(host, settings.ALLOWED_HOSTS) or (
            host in ("127.0.0.1", "localhost", "::1") and settings.DEBUG
        )
