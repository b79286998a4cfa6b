"""One completion in flight: read its reply's events from the channel layer and answer in
OpenAI's shapes, a whole ``chat.completion`` or ``chat.completion.chunk`` server-sent events."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import sync_to_async
from django.http import JsonResponse

from sessions_app import trace
from sessions_app.follow import session_follow
from sessions_app.models import Message, Session
from sessions_app.openai import services
from sessions_app.openai.errors import error_object, reply_failure
from sessions_app.openai.request import CompletionRequest

log = logging.getLogger(__name__)

FAILED = (Message.Status.FAILED, Message.Status.INTERRUPTED)


def _sse(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


@dataclass
class CompletionCall:
    """One completion in flight: reads its reply's events and answers in OpenAI's shapes."""

    layer: Any
    channel: str
    session: Session
    request: CompletionRequest
    reply_id: int
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def id(self) -> str:
        return f"chatcmpl-{self.reply_id}"

    async def _events(self) -> AsyncIterator[str | dict[str, Any]]:
        """The reply's new text piece by piece, then its final state (a message payload).

        The one reply follower reads the events, so a lost delta or ``done`` still reaches the
        caller: its text from the live buffer or the database, its end from the stored state.
        """
        text = ""
        async for event in session_follow(
            session=self.session, reply_id=self.reply_id, receive=lambda: self.layer.receive(self.channel)
        ):
            kind = event["type"]
            if kind == "session" and event["messages"] and event["messages"][0]["content"]:
                text = event["messages"][0]["content"]
                yield text
            elif kind == "delta":
                if not text:
                    trace.mark(self.reply_id, "door_event")
                text += event["text"]
                yield event["text"]
            elif kind == "done":
                yield event["message"]
                return
            elif kind == "deleted":
                yield self._deleted(text)
                return

    @staticmethod
    def _deleted(text: str) -> dict[str, Any]:
        return {
            "status": Message.Status.FAILED, "content": text, "error": "The reply was deleted before it ended.",
            "stats": {"prompt_tokens": None, "completion_tokens": None},
        }  # fmt: skip

    async def _close(self, *, ended: bool) -> None:
        """Leave the group; stop the reply if the caller went away; forget it if asked to."""
        try:
            await self.layer.group_discard(self.session.group_name, self.channel)
            if not ended:
                await sync_to_async(services.completion_stop)(session=self.session, message_id=self.reply_id)
            if not self.request.store:
                await sync_to_async(services.completion_discard)(session=self.session)
        except Exception:
            log.exception("cleaning up completion %s failed", self.id)

    async def wait(self) -> dict[str, Any]:
        ended = False
        final: dict[str, Any] = {}
        try:
            async for item in self._events():
                if isinstance(item, dict):
                    final = item
            ended = True
        finally:
            await self._close(ended=ended)
        return final

    async def sse(self) -> AsyncIterator[bytes]:
        closed = False
        try:
            yield self._chunk({"role": "assistant", "content": ""})
            final: dict[str, Any] = {}
            first = True
            async for item in self._events():
                if isinstance(item, str):
                    if first:
                        first = False
                        trace.mark(self.reply_id, "first_byte")
                    yield self._chunk({"content": item})
                else:
                    final = item
            # Clean up before the caller hears the end: by then a `store: false` call is gone.
            closed = True
            await self._close(ended=True)
            if final["status"] in FAILED:
                yield _sse({"error": error_object(reply_failure(final))})
            else:
                reason = services.completion_finish_reason(request=self.request, reply=final)
                yield self._chunk({}, finish_reason=reason)
                if self.request.include_usage:
                    yield _sse({**self._head("chat.completion.chunk"), "choices": [], "usage": self._usage(final)})
            yield b"data: [DONE]\n\n"
        finally:
            if not closed:
                await self._close(ended=False)

    def _head(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.request.agent.slug}

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        data = {
            **self._head("chat.completion.chunk"),
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        if self.request.include_usage:
            data["usage"] = None  # as OpenAI sends it: usage only in the extra last chunk
        return _sse(data)

    @staticmethod
    def _usage(final: dict[str, Any]) -> dict[str, int]:
        prompt = final["stats"]["prompt_tokens"] or 0
        completion = final["stats"]["completion_tokens"] or 0
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def completion(self, final: dict[str, Any]) -> JsonResponse:
        message = {"role": "assistant", "content": final["content"], "refusal": None}
        reason = services.completion_finish_reason(request=self.request, reply=final)
        return JsonResponse(
            {
                **self._head("chat.completion"),
                "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": reason}],
                "usage": self._usage(final),
            }
        )
