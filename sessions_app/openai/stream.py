"""One completion in flight: read its reply's events from the channel layer and answer in
OpenAI's shapes, a whole ``chat.completion`` or ``chat.completion.chunk`` server-sent events.

A reasoning model's thinking goes in ``reasoning_content`` (on the message, and on the deltas),
the field vLLM's and DeepSeek's servers use, and its token count in
``usage.completion_tokens_details.reasoning_tokens``.

An agent with tools of its own runs them on the platform when the request sent none: each call
the platform ran is in ``message.executed_tool_calls`` and, streamed, in one chunk's
``delta.executed_tool_calls`` as it ends (``tool_stream.executed_call_object``); the field is
left out when nothing ran. The client has nothing to run, so ``finish_reason`` is the answer's.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import sync_to_async
from django.http import JsonResponse

from inference.reasoning import CONTENT, REASONING, Part
from sessions_app import trace
from sessions_app.channel_layer import channel_close
from sessions_app.follow import session_follow
from sessions_app.models import Message, Session
from sessions_app.openai import services
from sessions_app.openai.errors import error_object, reply_failure
from sessions_app.openai.request import CompletionRequest
from sessions_app.openai.tool_stream import ToolCallStream, executed_call_object, message_of

log = logging.getLogger(__name__)

FAILED = (Message.Status.FAILED, Message.Status.INTERRUPTED)
RUNNING = "running"  # a stored call's status until it ends (sessions_app.tools.ToolRun)


@dataclass(frozen=True)
class Executed:
    """A call the platform ran for the agent, ended: the reply's stored form, and its place among
    the reply's calls."""

    index: int
    call: dict[str, Any]


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

    async def _events(self) -> AsyncIterator[tuple[Part, str] | Executed | dict[str, Any]]:
        """The reply's new text piece by piece, each with its part (the answer, or a reasoning
        model's thinking), each tool call the platform ran once it ended, then its final state (a
        message payload).

        The one reply follower reads the events, so a lost delta or ``done`` still reaches the
        caller: its text from the live buffer or the database, its end from the stored state. A
        call is passed on once, whether it ended in the stored state first read, in its
        ``tool_result`` event, or only in the final state (its event lost).
        """
        text = reasoning = ""
        seen: dict[str, int] = {}  # every call's id: its place among the reply's calls
        ended: set[str] = set()

        def newly_ended(calls: list[dict[str, Any]]) -> list[Executed]:
            out = []
            for call in calls:
                place = seen.setdefault(call["id"], len(seen))
                if call.get("status") != RUNNING and call["id"] not in ended:
                    ended.add(call["id"])
                    out.append(Executed(place, call))
            return out

        async for event in session_follow(
            session=self.session, reply_id=self.reply_id, receive=lambda: self.layer.receive(self.channel)
        ):
            kind = event["type"]
            if kind == "session" and event["messages"]:
                first = event["messages"][0]
                text, reasoning = first["content"], first["reasoning"]
                if reasoning:
                    yield REASONING, reasoning
                if text:
                    yield CONTENT, text
                for executed in newly_ended(first.get("tool_calls") or []):
                    yield executed
            elif kind in ("tool_call", "tool_result"):
                for executed in newly_ended([event["call"]]):
                    yield executed
            elif kind == "delta":
                if not text and not reasoning:
                    trace.mark(self.reply_id, "door_event")
                if event["part"] == REASONING:
                    reasoning += event["text"]
                else:
                    text += event["text"]
                yield event["part"], event["text"]
            elif kind == "done":
                for executed in newly_ended(event["message"].get("tool_calls") or []):
                    yield executed
                yield event["message"]
                return
            elif kind == "deleted":
                yield self._deleted(text, reasoning)
                return

    @staticmethod
    def _deleted(text: str, reasoning: str) -> dict[str, Any]:
        return {
            "status": Message.Status.FAILED, "content": text, "reasoning": reasoning,
            "error": "The reply was deleted before it ended.",
            "stats": {"prompt_tokens": None, "completion_tokens": None, "reasoning_tokens": None},
        }  # fmt: skip

    async def _close(self, *, ended: bool) -> None:
        """Leave the group; stop the reply if the caller went away; forget it if asked to."""
        try:
            await self.layer.group_discard(self.session.group_name, self.channel)
            await channel_close(self.layer, self.channel)
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
            calls = ToolCallStream(self.reply_id) if self.request.tool_calls else None
            async for item in self._events():
                if isinstance(item, tuple):
                    if first:
                        first = False
                        trace.mark(self.reply_id, "first_byte")
                    part, piece = item
                    if part == REASONING:
                        yield self._chunk({"reasoning_content": piece})
                        continue
                    for delta in calls.feed(piece) if calls is not None else [{"content": piece}]:
                        yield self._chunk(delta)
                elif isinstance(item, Executed):
                    ran = {"index": item.index, **executed_call_object(item.call)}
                    yield self._chunk({"executed_tool_calls": [ran]})
                else:
                    final = item
            for delta in calls.finish() if calls is not None else []:
                yield self._chunk(delta)
            # Clean up before the caller hears the end: by then a `store: false` call is gone.
            closed = True
            await self._close(ended=True)
            if final["status"] in FAILED:
                yield _sse({"error": error_object(reply_failure(final))})
            else:
                reason = services.completion_finish_reason(request=self.request, reply=final)
                yield self._chunk({}, finish_reason="tool_calls" if calls is not None and calls.calls else reason)
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
    def _usage(final: dict[str, Any]) -> dict[str, Any]:
        prompt = final["stats"]["prompt_tokens"] or 0
        completion = final["stats"]["completion_tokens"] or 0
        return {
            "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            # The thinking's chunks as the engine made them: one token each on llama.cpp and
            # OpenAI-compatible servers; part of completion_tokens, as OpenAI counts them.
            "completion_tokens_details": {"reasoning_tokens": final["stats"]["reasoning_tokens"] or 0},
        }  # fmt: skip

    def completion(self, final: dict[str, Any]) -> JsonResponse:
        if self.request.tool_calls:
            message, called = message_of(self.reply_id, final["content"])
        else:
            message, called = {"role": "assistant", "content": final["content"], "refusal": None}, False
        if final["reasoning"]:
            message["reasoning_content"] = final["reasoning"]
        executed = final.get("tool_calls") or []
        if executed:
            message["executed_tool_calls"] = [executed_call_object(call) for call in executed]
        reason = "tool_calls" if called else services.completion_finish_reason(request=self.request, reply=final)
        return JsonResponse(
            {
                **self._head("chat.completion"),
                "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": reason}],
                "usage": self._usage(final),
            }
        )
