"""The websocket door to a session: ``/ws/sessions/<id>/``.

Client -> server::

    {"type": "message", "content": "...", "client_id": "...", "agent": "slug"?,
     "params": {"max_tokens", "temperature", "top_p", "repetition_penalty", "seed", "system_prompt"}?}
    {"type": "stop", "message_id": 12?}
    {"type": "regenerate"}                                   replace the last reply
    {"type": "edit", "message_id": 11, "content": "..."}     change a message; later ones are replaced

Server -> client::

    {"type": "session", "session": {...}, "messages": [...]}   on connect: the persisted state
    {"type": "message", "message": {...}}                      a message was created / changed state
    {"type": "delta", "message_id": 12, "seq": 3, "text": "...", "part": "content"}   "reasoning": the thinking
    {"type": "done", "message_id": 12, "status": "complete", "stats": {...}, "message": {...}}
    {"type": "tool_call", "message_id": 12, "call": {"id", "name", "arguments", "status": "running", ...}}
    {"type": "tool_result", "message_id": 12, "call": {..., "result", "error", "status", "duration_ms"}}
    {"type": "deleted", "message_ids": [...]}                  replaced by an edit or a regenerate
    {"type": "turn", "reply_to", "message_id", "agent", "agent_name", "turn", "turns"}   who speaks next
    {"type": "picked", "reply_to": 11, "picked": 13}            the best of a compare's replies
    {"type": "error", "code": "...", "message": "..."}

What the client sees of the session comes from the one reply follower (``sessions_app.follow``):
the group's events are handed to it through a queue, and it sends the snapshot, each delta once
and in order, and exactly one ``done`` per reply, even when the ``done`` event itself was lost.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings

from inference.errors import PlatformError
from inference.reasoning import CONTENT
from sessions_app import services
from sessions_app.follow import session_follow
from sessions_app.models import Session
from sessions_app.params import reply_params_validate
from sessions_app.selectors import session_get_for_user
from sessions_app.socket_token import WS_CLOSE_SIGNED_OUT, TokenBound
from sessions_app.unavailable import UNAVAILABLE_ERRORS, WS_CLOSE_UNAVAILABLE, unavailable_reason
from sessions_app.validation import json_loads, text_problem
from sessions_app.ws_errors import error_event

log = logging.getLogger(__name__)

MAX_FRAME_BYTES = 256 * 1024


class SessionConsumer(TokenBound):
    session: Session | None = None
    group: str = ""
    _follower: asyncio.Task[None] | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # Also when the channel layer failed under us (ws_errors closes the socket then).
            if self._follower is not None:
                self._follower.cancel()

    async def connect(self) -> None:
        user = self.scope.get("user")
        if self.scope.get("auth_error") or user is None or not user.is_authenticated:
            await self.close(code=WS_CLOSE_SIGNED_OUT)
            return
        session_id = self.scope["url_route"]["kwargs"]["session_id"]
        self.session = await database_sync_to_async(session_get_for_user)(user=user, session_id=session_id)
        if self.session is None:
            await self.close(code=4404)
            return
        self.group = self.session.group_name
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        # Join before reading the state: whatever is broadcast from here on reaches us.
        await self.channel_layer.group_add(self.group, self.channel_name)
        # Revoking the token closes this socket at once; so does its expiry.
        await self.token_watch()
        await self.accept()
        self._follower = asyncio.create_task(self._follow(self.session))

    async def _follow(self, session: Session) -> None:
        coalesce = _Coalescer(self.send_json, settings.REPLY_BROADCAST_INTERVAL_MS / 1000)
        try:
            async for event in session_follow(session=session, receive=self.events.get):
                if event["type"] == "delta":
                    await coalesce.delta(event)
                elif event["type"] != "idle":
                    await coalesce.other(event)
        except asyncio.CancelledError:
            coalesce.cancel()
            raise
        except UNAVAILABLE_ERRORS as exc:
            code, message, reason = unavailable_reason(exc)
            log.warning("following session %s stopped: %s (%s)", session.pk, reason, exc)
            await self._error(code, message)
            await self.close(code=WS_CLOSE_UNAVAILABLE, reason=reason)
        except Exception:
            log.exception("following session %s failed", session.pk)
            await self.close(code=1011)

    async def disconnect(self, code: int) -> None:
        if self._follower is not None:
            self._follower.cancel()
        await self.token_unwatch()
        if not self.group:
            return
        try:
            await self.channel_layer.group_discard(self.group, self.channel_name)
        except UNAVAILABLE_ERRORS as exc:  # Redis is away: its group entries expire by themselves
            log.info("leaving the session's group failed: %s", exc)

    # --- client -> server -------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is None:
            await self._error("bad_frame", "Send JSON text frames.")
            return
        if len(text_data.encode("utf-8")) > MAX_FRAME_BYTES:
            await self._error("too_large", f"A frame may be at most {MAX_FRAME_BYTES} bytes.")
            return
        try:
            content = json_loads(text_data)
        except ValueError:
            await self._error("bad_json", "The frame is not valid JSON.")
            return
        if not isinstance(content, dict):
            await self._error("bad_json", "Send a JSON object with a 'type'.")
            return
        # A NUL or a lone surrogate would fail in the database, after part of the work was done.
        if problem := text_problem(content):
            await self._error("invalid_text", str(problem))
            return
        await self.receive_json(content)

    async def receive_json(self, content: dict[str, Any], **kwargs: Any) -> None:
        kind = content.get("type")
        try:
            if kind == "message":
                await self._call(self._send_message, content=content)
            elif kind == "stop":
                await self._call(self._stop, message_id=content.get("message_id"))
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
        except PlatformError as exc:  # every service's refusal, in this one place
            await self.send_json(error_event(exc))
        except UNAVAILABLE_ERRORS:
            raise  # ws_errors tells the client which service is away, and closes
        except Exception:
            # A frame this code did not foresee fails alone, as an HTTP request would with a 500:
            # the socket (and the client's view of the session) stays open.
            log.exception("websocket frame of type %r failed", kind)
            await self._error("server_error", "The server failed on this request; it was logged.")

    def _send_message(self, *, session: Session, content: dict[str, Any]) -> None:
        compare = content.get("compare")
        if compare is not None:
            if not isinstance(compare, list) or not all(isinstance(slug, str) for slug in compare):
                raise services.ChatError("invalid_compare", "compare must be a list of 2 to 4 agent slugs.")
            agents = [services.agent_check_usable(user=self.scope["user"], slug=slug) for slug in compare]
            services.message_compare(
                session=session, content=content.get("content"), agents=agents, client_id=content.get("client_id")
            )
            return
        agent = None
        if content.get("agent"):
            agent = services.agent_check_usable(user=self.scope["user"], slug=content["agent"])
        params = reply_params_validate(content.get("params"), agent=agent)
        services.message_send(
            session=session, content=content.get("content"), client_id=content.get("client_id"), agent=agent,
            params=params or None,
        )  # fmt: skip

    @staticmethod
    def _stop(*, session: Session, message_id: Any) -> None:
        if message_id is not None and (isinstance(message_id, bool) or not isinstance(message_id, int)):
            raise services.ChatError("invalid_message_id", "message_id must be an integer.")
        services.reply_stop(session=session, message_id=message_id)

    @database_sync_to_async
    def _call(self, service: Any, **kwargs: Any) -> None:
        assert self.session is not None
        # The session may have been deleted by another tab; look it up again, as its owner.
        session = session_get_for_user(user=self.scope["user"], session_id=self.session.pk)
        if session is None:
            raise services.ChatError("not_found", "This session no longer exists.")
        service(session=session, **kwargs)

    async def _error(self, code: str, message: str) -> None:
        await self.send_json({"type": "error", "code": code, "message": message})

    # --- group events -> the follower -------------------------------------------------------

    async def chat_message(self, event: dict[str, Any]) -> None:
        self.events.put_nowait(event)

    chat_delta = chat_done = chat_deleted = chat_turn = chat_picked = chat_tool = chat_message


def _stream_of(delta: dict[str, Any]) -> tuple[int, str]:
    """The reply and the part (answer or thinking) a delta extends."""
    return delta["message_id"], delta.get("part", CONTENT)


class _Coalescer:
    """At most one ``delta`` event per ``interval`` to the browser: a reply made token by token
    for an API client (``params.cadence``) reaches a page watching the same session as batches,
    each the text since the last one with its last ``seq``. A batch waits at most ``interval``;
    every other event, and a delta of another reply or part, first sends the batch before it, so
    the order is kept."""

    def __init__(self, send: Any, interval: float) -> None:
        self.send, self.interval = send, interval
        self.pending: dict[str, Any] | None = None
        self.last = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.lock = asyncio.Lock()

    async def delta(self, event: dict[str, Any]) -> None:
        async with self.lock:
            pending = self.pending
            if pending is not None and _stream_of(pending) != _stream_of(event):
                await self._flush()
            if self.pending is None:
                self.pending = dict(event)
            else:
                self.pending["text"] += event["text"]
                self.pending["seq"] = event["seq"]
            loop = asyncio.get_running_loop()
            wait = self.last + self.interval - loop.time()
            if wait <= 0:
                await self._flush()
            elif self.timer is None:
                self.timer = loop.call_later(wait, lambda: asyncio.ensure_future(self.flush()))

    async def other(self, event: dict[str, Any]) -> None:
        async with self.lock:
            await self._flush()
            await self.send(event)

    async def flush(self) -> None:
        async with self.lock:
            await self._flush()

    async def _flush(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        event, self.pending = self.pending, None
        if event is not None:
            self.last = asyncio.get_running_loop().time()
            await self.send(event)

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
