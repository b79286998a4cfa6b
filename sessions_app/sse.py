"""Server-sent events for one reply: ``GET /api/sessions/{id}/messages/{mid}/stream/``.

The same guarantees as the websocket, from the same follower (``sessions_app.follow``): the
stream opens with the reply as it is now (``snapshot``: content and ``seq``), then sends each
later delta once, in order, and ends with exactly one ``done`` (or ``deleted``) event, even when
the worker's ``done`` event was lost on the way. An agent that uses tools also sends
``tool_call`` (a call started) and ``tool_result`` (it ended) events, ``{"message_id", "call"}``.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.http import HttpRequest, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase

from sessions_app.channel_layer import channel_close
from sessions_app.follow import session_follow
from sessions_app.models import Message, Session
from sessions_app.selectors import session_get_for_user
from sessions_app.tokens import TokenRejected, token_from_header

KEEPALIVE_SECONDS = 15


@database_sync_to_async
def _token_user(header: str) -> Any:
    token = token_from_header(header)
    return token.user if token is not None else None


@database_sync_to_async
def _session_with_message(user: Any, session_id: int, message_id: int) -> Session | None:
    session = session_get_for_user(user=user, session_id=session_id)
    if session is None or not Message.objects.filter(session=session, pk=message_id).exists():
        return None
    return session


def _sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


async def message_stream(request: HttpRequest, session_id: int, message_id: int) -> HttpResponseBase:
    header = request.headers.get("Authorization", "")
    try:
        user = await _token_user(header) if header.strip() else await request.auser()
    except TokenRejected as exc:
        return JsonResponse({"code": "not_authenticated", "message": exc.message}, status=401)
    if user is None or not user.is_authenticated:
        return JsonResponse({"code": "not_authenticated", "message": "Send a valid API token."}, status=401)
    session = await _session_with_message(user, session_id, message_id)
    if session is None:
        return JsonResponse({"code": "not_found", "message": "No such message."}, status=404)
    layer = get_channel_layer()
    channel = await layer.new_channel()
    # Subscribe first, read the state second (the follower's snapshot): no delta falls between.
    await layer.group_add(session.group_name, channel)

    async def events() -> AsyncIterator[str]:
        last_write = time.monotonic()
        try:
            async for event in session_follow(
                session=session, reply_id=message_id, receive=lambda: layer.receive(channel)
            ):
                kind = event["type"]
                if kind == "session":
                    if not event["messages"]:
                        continue  # deleted meanwhile: the follower says so next
                    yield _sse("snapshot", event["messages"][0])
                elif kind == "delta":
                    yield _sse("delta", {k: event[k] for k in ("message_id", "seq", "text", "part") if k in event})
                elif kind == "message":
                    yield _sse("status", {"message_id": message_id, "status": event["message"]["status"]})
                elif kind == "done":
                    yield _sse("done", event["message"])
                elif kind in ("tool_call", "tool_result"):
                    yield _sse(kind, {"message_id": event["message_id"], "call": event["call"]})
                elif kind == "deleted":
                    yield _sse("deleted", {"message_ids": event["message_ids"]})
                elif kind == "idle" and time.monotonic() - last_write >= KEEPALIVE_SECONDS:
                    yield ": keep-alive\n\n"
                else:
                    continue
                last_write = time.monotonic()
        finally:
            await layer.group_discard(session.group_name, channel)
            await channel_close(layer, channel)

    response = StreamingHttpResponse(events(), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: pass events through as they come
    return response
