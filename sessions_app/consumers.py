"""The websocket door to a session: ``/ws/sessions/<id>/``.

Client -> server::

    {"type": "message", "content": "...", "client_id": "...", "agent": "slug"?}
    {"type": "stop", "message_id": 12?}
    {"type": "regenerate"}                                   replace the last reply
    {"type": "edit", "message_id": 11, "content": "..."}     change a message; later ones are replaced

Server -> client::

    {"type": "session", "session": {...}, "messages": [...]}   on connect: the persisted state
    {"type": "message", "message": {...}}                      a message was created / changed state
    {"type": "delta", "message_id": 12, "seq": 3, "text": "..."}
    {"type": "done", "message_id": 12, "status": "complete", "stats": {...}, "message": {...}}
    {"type": "deleted", "message_ids": [...]}                  replaced by an edit or a regenerate
    {"type": "error", "code": "...", "message": "..."}

Each client gets every delta of a reply once, in order: the snapshot sent on connect carries the
text up to some ``seq``, and later deltas with a ``seq`` at or below it are dropped here.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.utils import timezone

from inference.streambuf import stream_buffer
from sessions_app import services
from sessions_app.models import Message, Session
from sessions_app.selectors import message_list, message_payload, session_get_for_user

log = logging.getLogger(__name__)

MAX_FRAME_BYTES = 256 * 1024


class SessionConsumer(AsyncJsonWebsocketConsumer):
    session: Session | None = None
    group: str = ""
    token_group: str = ""
    _expiry: asyncio.TimerHandle | None = None

    async def connect(self) -> None:
        user = self.scope.get("user")
        if self.scope.get("auth_error") or user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        session_id = self.scope["url_route"]["kwargs"]["session_id"]
        self.session = await database_sync_to_async(session_get_for_user)(user=user, session_id=session_id)
        if self.session is None:
            await self.close(code=4404)
            return
        self.group = self.session.group_name
        # seq of the last delta this client has, per reply still streaming.
        self.sent_seq: dict[int, int] = {}
        # Join before reading the state: whatever is broadcast from here on reaches us.
        await self.channel_layer.group_add(self.group, self.channel_name)
        token = self.scope.get("api_token")
        if token is not None:
            # Revoking the token closes this socket at once; so does its expiry.
            self.token_group = token.group_name
            await self.channel_layer.group_add(self.token_group, self.channel_name)
            if token.expires_at is not None:
                delay = (token.expires_at - timezone.now()).total_seconds()
                self._expiry = asyncio.get_running_loop().call_later(
                    max(0.0, delay), lambda: asyncio.ensure_future(self._token_ended())
                )
        await self.accept()
        await self.send_json(await self._snapshot())

    async def _token_ended(self) -> None:
        await self.send_json(
            {"type": "error", "code": "token_revoked", "message": "Your API token was revoked or expired."}
        )
        await self.close(code=4401)

    async def token_revoked(self, event: dict[str, Any]) -> None:
        await self._token_ended()

    async def disconnect(self, code: int) -> None:
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)
        if self.token_group:
            await self.channel_layer.group_discard(self.token_group, self.channel_name)
        if self._expiry is not None:
            self._expiry.cancel()

    @database_sync_to_async
    def _snapshot(self) -> dict[str, Any]:
        assert self.session is not None
        self.session.refresh_from_db()
        messages = []
        for message in message_list(session=self.session):
            payload = message_payload(message)
            if message.status == Message.Status.STREAMING:
                live = stream_buffer().snapshot(message.pk)
                if live is not None and live[1] >= message.seq:
                    payload["content"], payload["seq"] = live
            if message.status in (Message.Status.STREAMING, Message.Status.QUEUED):
                self.sent_seq[message.pk] = payload["seq"]
            messages.append(payload)
        session = {
            "id": self.session.pk,
            "title": self.session.title,
            "agent": self.session.agent.slug if self.session.agent else None,
            "archived": self.session.archived,
        }
        return {"type": "session", "session": session, "messages": messages}

    # --- client -> server -------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is None:
            await self._error("bad_frame", "Send JSON text frames.")
            return
        if len(text_data.encode("utf-8")) > MAX_FRAME_BYTES:
            await self._error("too_large", f"A frame may be at most {MAX_FRAME_BYTES} bytes.")
            return
        try:
            content = json.loads(text_data)
        except json.JSONDecodeError:
            await self._error("bad_json", "The frame is not valid JSON.")
            return
        if not isinstance(content, dict):
            await self._error("bad_json", "Send a JSON object with a 'type'.")
            return
        await self.receive_json(content)

    async def receive_json(self, content: dict[str, Any], **kwargs: Any) -> None:
        kind = content.get("type")
        try:
            if kind == "message":
                await self._message(content)
            elif kind == "stop":
                await self._stop(content)
            elif kind == "regenerate":
                await self._call(services.reply_regenerate)
            elif kind == "edit":
                await self._call(
                    services.message_edit, message_id=content.get("message_id"), content=content.get("content")
                )
            elif kind == "ping":
                await self.send_json({"type": "pong"})
            else:
                await self._error(
                    "unknown_type", f"Unknown message type {kind!r}; use message, stop, regenerate or edit."
                )
        except services.ChatError as exc:
            await self._error(exc.code, exc.message)

    @database_sync_to_async
    def _send_message(self, content: dict[str, Any]) -> None:
        assert self.session is not None
        # The session may have been deleted by another tab; look it up again, as its owner.
        session = session_get_for_user(user=self.scope["user"], session_id=self.session.pk)
        if session is None:
            raise services.ChatError("not_found", "This session no longer exists.")
        agent = None
        if content.get("agent"):
            if not isinstance(content["agent"], str):
                raise services.ChatError("unknown_agent", "agent must be an agent's slug.")
            agent = services.agent_get_for_user(user=self.scope["user"], slug=content["agent"])
        services.message_send(
            session=session, content=content.get("content"), client_id=content.get("client_id"), agent=agent
        )

    async def _message(self, content: dict[str, Any]) -> None:
        await self._send_message(content)

    @database_sync_to_async
    def _stop_replies(self, message_id: Any) -> list[int]:
        assert self.session is not None
        if message_id is not None and not isinstance(message_id, int):
            raise services.ChatError("invalid_message_id", "message_id must be an integer.")
        return services.reply_stop(session=self.session, message_id=message_id)

    async def _stop(self, content: dict[str, Any]) -> None:
        await self._stop_replies(content.get("message_id"))

    @database_sync_to_async
    def _call(self, service: Any, **kwargs: Any) -> None:
        assert self.session is not None
        session = session_get_for_user(user=self.scope["user"], session_id=self.session.pk)
        if session is None:
            raise services.ChatError("not_found", "This session no longer exists.")
        service(session=session, **kwargs)

    async def _error(self, code: str, message: str) -> None:
        await self.send_json({"type": "error", "code": code, "message": message})

    # --- group events -> client ------------------------------------------------------------

    async def chat_message(self, event: dict[str, Any]) -> None:
        message = event["message"]
        if message["status"] in (Message.Status.QUEUED, Message.Status.STREAMING):
            self.sent_seq.setdefault(message["id"], 0)
        await self.send_json({"type": "message", "message": message})

    async def chat_delta(self, event: dict[str, Any]) -> None:
        message_id, seq = event["message_id"], event["seq"]
        if seq <= self.sent_seq.get(message_id, 0):
            return  # already in the snapshot this client got
        self.sent_seq[message_id] = seq
        await self.send_json({"type": "delta", "message_id": message_id, "seq": seq, "text": event["text"]})

    async def chat_deleted(self, event: dict[str, Any]) -> None:
        for message_id in event["message_ids"]:
            self.sent_seq.pop(message_id, None)
        await self.send_json({"type": "deleted", "message_ids": event["message_ids"]})

    async def chat_done(self, event: dict[str, Any]) -> None:
        message = event["message"]
        self.sent_seq.pop(message["id"], None)
        await self.send_json(
            {
                "type": "done",
                "message_id": message["id"],
                "status": message["status"],
                "error": message["error"],
                "stats": message["stats"],
                "message": message,
            }
        )
