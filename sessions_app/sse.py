"""Server-sent events for one reply: ``GET /api/sessions/{id}/messages/{mid}/stream/``.

The same guarantees as the websocket: the stream opens with the reply as it is now (content and
``seq``), then sends each later delta once, in order, and ends with exactly one ``done`` event.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.http import HttpRequest, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase

from inference.streambuf import stream_buffer
from sessions_app.models import Message
from sessions_app.selectors import message_payload, session_get_for_user
from sessions_app.tokens import token_authenticate

KEEPALIVE_SECONDS = 15


@database_sync_to_async
def _token_user(header: str) -> Any:
    scheme, _, secret = header.partition(" ")
    if scheme.lower() not in ("token", "bearer"):
        return None
    token = token_authenticate(secret.strip())
    return token.user if token is not None else None


@database_sync_to_async
def _reply_state(user: Any, session_id: int, message_id: int) -> tuple[Any, dict[str, Any]] | None:
    session = session_get_for_user(user=user, session_id=session_id)
    if session is None:
        return None
    message = Message.objects.select_related("agent").filter(session=session, pk=message_id).first()
    if message is None:
        return None
    payload = message_payload(message)
    if message.status == Message.Status.STREAMING:
        live = stream_buffer().snapshot(message.pk)
        if live is not None and live[1] >= message.seq:
            payload["content"], payload["seq"] = live
    return session, payload


def _sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


async def message_stream(request: HttpRequest, session_id: int, message_id: int) -> HttpResponseBase:
    header = request.headers.get("Authorization", "")
    user = await _token_user(header) if header else await request.auser()
    if user is None or not user.is_authenticated:
        return JsonResponse({"code": "not_authenticated", "message": "Send a valid API token."}, status=401)
    layer = get_channel_layer()
    channel = await layer.new_channel()
    # Subscribe first, read the state second: no delta falls between the two.
    state = await _reply_state(user, session_id, message_id)
    if state is None:
        return JsonResponse({"code": "not_found", "message": "No such message."}, status=404)
    session, _ = state
    await layer.group_add(session.group_name, channel)
    state = await _reply_state(user, session_id, message_id)
    if state is None:
        await layer.group_discard(session.group_name, channel)
        return JsonResponse({"code": "not_found", "message": "No such message."}, status=404)
    snapshot = state[1]

    async def events() -> AsyncIterator[str]:
        last_seq = snapshot["seq"]
        try:
            yield _sse("snapshot", snapshot)
            if snapshot["status"] not in (Message.Status.QUEUED, Message.Status.STREAMING):
                yield _sse("done", snapshot)
                return
            while True:
                try:
                    event = await asyncio.wait_for(layer.receive(channel), KEEPALIVE_SECONDS)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                kind = event.get("type")
                if kind == "chat.delta" and event["message_id"] == message_id and event["seq"] > last_seq:
                    last_seq = event["seq"]
                    yield _sse("delta", {"message_id": message_id, "seq": event["seq"], "text": event["text"]})
                elif kind == "chat.message" and event["message"]["id"] == message_id:
                    yield _sse("status", {"message_id": message_id, "status": event["message"]["status"]})
                elif kind == "chat.done" and event["message"]["id"] == message_id:
                    yield _sse("done", event["message"])
                    return
                elif kind == "chat.deleted" and message_id in event["message_ids"]:
                    yield _sse("deleted", {"message_ids": event["message_ids"]})
                    return
        finally:
            await layer.group_discard(session.group_name, channel)

    response = StreamingHttpResponse(events(), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: pass events through as they come
    return response
