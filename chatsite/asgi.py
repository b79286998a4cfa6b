"""ASGI entry point: HTTP to Django, websockets to the Channels consumers."""

from __future__ import annotations

import asyncio
import os
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from inference.runtime.heap import heap_freeze  # noqa: E402
from pipeline.consumers import JobsConsumer  # noqa: E402
from sessions_app import broadcast  # noqa: E402
from sessions_app.consumers import SessionConsumer  # noqa: E402
from sessions_app.ws_auth import OriginCheckMiddleware, TokenHeaderAuthMiddleware  # noqa: E402
from sessions_app.ws_errors import UnavailableMiddleware  # noqa: E402

websocket_urlpatterns = [
    path("ws/sessions/<int:session_id>/", SessionConsumer.as_asgi()),
    path("ws/jobs/", JobsConsumer.as_asgi()),
]

router = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # Outermost: an outage anywhere under it (auth lookups, the channel layer) closes the
        # socket with an error event and code 4503 instead of an HTTP 500 or a bare 1011.
        "websocket": UnavailableMiddleware(
            OriginCheckMiddleware(AuthMiddlewareStack(TokenHeaderAuthMiddleware(URLRouter(websocket_urlpatterns))))
        ),
    }
)


# Last: everything imported and built by now lives as long as daphne.
heap_freeze("daphne")


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    # The embedded default's reply threads hand their channel-layer sends to this loop.
    broadcast.loop_register(asyncio.get_running_loop())
    await router(scope, receive, send)
