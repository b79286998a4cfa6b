"""The OpenAI-compatible door under ``/v1``: ``GET /v1/models`` and ``POST /v1/chat/completions``.

Plain async Django views rather than DRF: a streamed reply is an async iterator that daphne sends
chunk by chunk from its event loop, with no thread held per open stream. A completion joins its
session's group *before* the reply is queued, so no delta is missed, and stops the reply when the
caller hangs up.

Auth: ``Authorization: Bearer <token>`` (or ``Token``), or the browser's session cookie. With the
cookie a POST must pass Django's CSRF check, so another site cannot start completions as a
logged-in user; a token is never sent by a browser on its own, so it needs no such check.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse, StreamingHttpResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.views.decorators.csrf import csrf_exempt
from rest_framework.throttling import UserRateThrottle

from agents.models import Agent
from sessions_app import completions
from sessions_app.completions import CompletionError, CompletionRequest
from sessions_app.models import Message, Session
from sessions_app.tokens import ApiTokenAuthentication, token_authenticate

log = logging.getLogger(__name__)

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
# With no event for this long, the reply's state is read from the database: a lost `done` event
# (Redis restarted) must not leave the caller waiting for ever.
STATE_CHECK_SECONDS = 10.0
FAILED = (Message.Status.FAILED, Message.Status.INTERRUPTED)
FINAL = tuple(Message.FINAL_STATUSES)


class _RateLimited(CompletionError):
    def __init__(self, wait: float) -> None:
        super().__init__(
            f"Too many requests; try again in {wait:.0f} s.", code="rate_limit_exceeded", status=429, kind="requests"
        )
        self.wait = wait


def _error(exc: CompletionError) -> JsonResponse:
    """OpenAI's error object, with the status its client maps to an exception class."""
    body = {"error": {"message": exc.message, "type": exc.kind, "param": exc.param, "code": exc.code}}
    response = JsonResponse(body, status=exc.status)
    if isinstance(exc, _RateLimited):
        response["Retry-After"] = str(max(1, math.ceil(exc.wait)))
    if exc.status >= 500:
        # Each try would be kept as a new session: let the caller decide.
        response["x-should-retry"] = "false"
    return response


def _method_not_allowed(request: HttpRequest, allowed: str) -> JsonResponse:
    response = _error(
        CompletionError(f"{request.method} is not allowed here; use {allowed}.", code="method_not_allowed", status=405)
    )
    response["Allow"] = allowed
    return response


class _CsrfCheck(CsrfViewMiddleware):
    """Django's CSRF check as a function: the reason for a refusal, or None (as DRF does it)."""

    def _reject(self, request: HttpRequest, reason: str) -> Any:
        return reason


def _not_exempt(request: HttpRequest) -> HttpResponse:
    """A stand-in view without ``csrf_exempt``, so that the check runs."""
    return HttpResponse()


def _caller(request: HttpRequest) -> Any:
    """The user a request acts for; raises CompletionError(401 or 403)."""
    header = request.headers.get("Authorization", "").strip()
    if header:
        scheme, _, secret = header.partition(" ")
        if scheme.lower() not in ApiTokenAuthentication.keywords:
            raise CompletionError(
                "Send your API token as 'Authorization: Bearer <token>'.", code="invalid_api_key", status=401
            )
        token = token_authenticate(secret.strip())
        if token is None:
            raise CompletionError("Invalid, expired or revoked token.", code="invalid_api_key", status=401)
        return token.user
    user = request.user
    if not user.is_authenticated:
        raise CompletionError("No API token: send 'Authorization: Bearer <token>'.", code="missing_api_key", status=401)
    if request.method not in SAFE_METHODS:
        check = _CsrfCheck(_not_exempt)
        check.process_request(request)
        reason = check.process_view(request, _not_exempt, (), {})
        if reason:
            raise CompletionError(
                f"CSRF check failed ({reason}). Programs should send an API token instead of a cookie.",
                code="csrf_failed", status=403,
            )  # fmt: skip
    return user


def _throttle(user: Any) -> None:
    """The REST API's per-user limit; the two doors share one counter."""
    throttle = UserRateThrottle()
    if not throttle.allow_request(SimpleNamespace(user=user, META={}), None):  # type: ignore[arg-type]
        raise _RateLimited(throttle.wait() or 1.0)


def _body(request: HttpRequest) -> Any:
    try:
        raw = request.body
    except RequestDataTooBig:
        raise CompletionError(
            f"The request body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes.",
            code="request_too_large", status=413,
        ) from None  # fmt: skip
    try:
        return json.loads(raw)
    except ValueError:
        raise CompletionError("The request body is not valid JSON.", code="invalid_json") from None


def _model(agent: Agent) -> dict[str, Any]:
    return {"id": agent.slug, "object": "model", "created": int(agent.created_at.timestamp()), "owned_by": "chatsite"}


def _models(request: HttpRequest, slug: str | None) -> dict[str, Any]:
    user = _caller(request)
    _throttle(user)
    if slug is not None:
        return _model(completions.agent_for_model(user=user, model=slug))
    agents = Agent.objects.visible_to(user).filter(is_active=True).order_by("slug")
    return {"object": "list", "data": [_model(agent) for agent in agents]}


@csrf_exempt
async def models_list(request: HttpRequest) -> HttpResponse:
    """The agents the caller may use, as models; ``id`` is the agent's slug."""
    if request.method not in ("GET", "HEAD"):
        return _method_not_allowed(request, "GET")
    try:
        return JsonResponse(await sync_to_async(_models)(request, None))
    except CompletionError as exc:
        return _error(exc)


@csrf_exempt
async def model_detail(request: HttpRequest, model: str) -> HttpResponse:
    if request.method not in ("GET", "HEAD"):
        return _method_not_allowed(request, "GET")
    try:
        return JsonResponse(await sync_to_async(_models)(request, model))
    except CompletionError as exc:
        return _error(exc)


def _begin(request: HttpRequest) -> tuple[CompletionRequest, Session]:
    """Everything before the reply is queued, in one thread hop: auth, limit, checks, session."""
    user = _caller(request)
    _throttle(user)
    completion = completions.completion_validate(user=user, body=_body(request))
    return completion, completions.completion_session_create(user=user, request=completion)


@csrf_exempt
async def chat_completions(request: HttpRequest) -> HttpResponseBase:
    if request.method != "POST":
        return _method_not_allowed(request, "POST")
    try:
        completion, session = await sync_to_async(_begin)(request)
    except CompletionError as exc:
        return _error(exc)
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(session.group_name, channel)
    try:
        reply = await sync_to_async(completions.completion_start)(session=session, request=completion)
    except BaseException as exc:
        await layer.group_discard(session.group_name, channel)
        if isinstance(exc, CompletionError):
            return _error(exc)
        raise
    call = _Call(layer=layer, channel=channel, session=session, request=completion, reply_id=reply.pk)
    if completion.stream:
        response: HttpResponseBase = StreamingHttpResponse(call.sse(), content_type="text/event-stream")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"  # a proxy in front must not hold chunks back
    else:
        final = await call.wait()
        response = call.completion(final) if final["status"] not in FAILED else _error(_failure(final))
    if completion.store:
        response["X-Chatsite-Session"] = str(session.pk)
    return response


def _failure(final: dict[str, Any]) -> CompletionError:
    return CompletionError(
        final["error"] or "The reply failed.", code=f"reply_{final['status']}", status=502, kind="server_error"
    )


def _sse(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


@dataclass
class _Call:
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
        """The reply's new text piece by piece, then its final state (a message payload)."""
        seq, text = 0, ""
        final: dict[str, Any] | None = None
        while final is None:
            try:
                event = await asyncio.wait_for(self.layer.receive(self.channel), STATE_CHECK_SECONDS)
            except TimeoutError:
                state = await sync_to_async(completions.completion_reply_state)(message_id=self.reply_id)
                if state is None:
                    final = self._deleted(text)
                elif state["status"] in FINAL:
                    final = state
                continue
            kind = event.get("type")
            if kind == "chat.delta" and event["message_id"] == self.reply_id and event["seq"] > seq:
                seq, text = event["seq"], text + event["text"]
                yield event["text"]
            elif kind == "chat.done" and event["message"]["id"] == self.reply_id:
                final = event["message"]
            elif kind == "chat.deleted" and self.reply_id in event["message_ids"]:
                final = self._deleted(text)
        # A delta lost on the way (a full channel, a Redis hiccup) still reaches the caller.
        content = final["content"]
        if len(content) > len(text) and content.startswith(text):
            yield content[len(text) :]
        yield final

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
                await sync_to_async(completions.completion_stop)(session=self.session, message_id=self.reply_id)
            if not self.request.store:
                await sync_to_async(completions.completion_discard)(session=self.session)
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
            async for item in self._events():
                if isinstance(item, str):
                    yield self._chunk({"content": item})
                else:
                    final = item
            # Clean up before the caller hears the end: by then a `store: false` call is gone.
            closed = True
            await self._close(ended=True)
            if final["status"] in FAILED:
                failure = _failure(final)
                error = {"message": failure.message, "type": failure.kind, "param": None, "code": failure.code}
                yield _sse({"error": error})
            else:
                reason = completions.completion_finish_reason(request=self.request, reply=final)
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
        reason = completions.completion_finish_reason(request=self.request, reply=final)
        return JsonResponse(
            {
                **self._head("chat.completion"),
                "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": reason}],
                "usage": self._usage(final),
            }
        )
