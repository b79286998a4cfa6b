"""The ``/v1`` views: ``GET /v1/models``, ``GET /v1/models/<id>`` and ``POST /v1/chat/completions``.

Plain async Django views rather than DRF: a streamed reply is an async iterator that daphne sends
chunk by chunk from its event loop, with no thread held per open stream. A completion joins its
session's group *before* the reply is queued, so no delta is missed, and stops the reply when the
caller hangs up.

Auth: ``Authorization: Bearer <token>`` (or ``Token``), or the browser's session cookie. With the
cookie a POST must pass Django's CSRF check, so another site cannot start completions as a
logged-in user; a token is never sent by a browser on its own, so it needs no such check.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse, StreamingHttpResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.views.decorators.csrf import csrf_exempt

from agents.models import Agent
from agents.selectors import agent_list_for_user
from sessions_app import trace
from sessions_app.models import Message, Session
from sessions_app.openai import services
from sessions_app.openai.errors import CompletionError, RateLimited, error_response, openai_door, reply_failure
from sessions_app.openai.request import CompletionRequest, agent_for_model, completion_validate
from sessions_app.openai.stream import FAILED, CompletionCall
from sessions_app.throttling import UserThrottle
from sessions_app.tokens import TokenRejected, token_from_header
from sessions_app.validation import json_loads, text_problem

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def _method_not_allowed(request: HttpRequest, allowed: str) -> JsonResponse:
    response = error_response(
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
    try:
        token = token_from_header(request.headers.get("Authorization"))
    except TokenRejected as exc:
        raise CompletionError(exc.message, code=exc.code, status=401) from None
    if token is not None:
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
    throttle = UserThrottle()
    if not throttle.allow_request(SimpleNamespace(user=user, META={}), None):  # type: ignore[arg-type]
        raise RateLimited(throttle.wait() or 1.0)


def _body(request: HttpRequest) -> Any:
    try:
        raw = request.body
    except RequestDataTooBig:
        raise CompletionError(
            f"The request body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes.",
            code="request_too_large", status=413,
        ) from None  # fmt: skip
    try:
        body = json_loads(raw)
    except ValueError:
        raise CompletionError("The request body is not valid JSON.", code="invalid_json") from None
    # A NUL or a lone surrogate would fail in the database, after the session was made.
    if problem := text_problem(body):
        raise CompletionError(f"{problem}.", code="invalid_value", param=problem.path or None)
    return body


def _model(agent: Agent) -> dict[str, Any]:
    return {"id": agent.slug, "object": "model", "created": int(agent.created_at.timestamp()), "owned_by": "chatsite"}


def _models(request: HttpRequest, slug: str | None) -> dict[str, Any]:
    user = _caller(request)
    _throttle(user)
    if slug is not None:
        return _model(agent_for_model(user=user, model=slug))
    agents = agent_list_for_user(user=user).order_by("slug")
    return {"object": "list", "data": [_model(agent) for agent in agents]}


@csrf_exempt
@openai_door
async def models_list(request: HttpRequest) -> HttpResponse:
    """The agents the caller may use, as models; ``id`` is the agent's slug."""
    if request.method not in ("GET", "HEAD"):
        return _method_not_allowed(request, "GET")
    return JsonResponse(await sync_to_async(_models)(request, None))


@csrf_exempt
@openai_door
async def model_detail(request: HttpRequest, model: str) -> HttpResponse:
    if request.method not in ("GET", "HEAD"):
        return _method_not_allowed(request, "GET")
    return JsonResponse(await sync_to_async(_models)(request, model))


def _begin(request: HttpRequest) -> tuple[CompletionRequest, Session, Message]:
    """Everything up to the queued reply, in one thread hop: auth, limit, checks, session, the
    messages (the reply is queued once they commit)."""
    user = _caller(request)
    _throttle(user)
    completion = completion_validate(user=user, body=_body(request))
    session = services.completion_session_create(user=user, request=completion)
    return completion, session, services.completion_start(session=session, request=completion)


@csrf_exempt
@openai_door
async def chat_completions(request: HttpRequest) -> HttpResponseBase:
    received = time.time()
    if request.method != "POST":
        return _method_not_allowed(request, "POST")
    completion, session, reply = await sync_to_async(_begin)(request)
    stored = time.time()
    # Joined after the reply was queued: the follower's first read (the stored state, the live
    # buffer's text) covers whatever was sent before, and everything after reaches this channel.
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(session.group_name, channel)
    for hop, at in (("request", received), ("stored", stored), ("joined", time.time())):
        trace.mark(reply.pk, hop, at)
    call = CompletionCall(layer=layer, channel=channel, session=session, request=completion, reply_id=reply.pk)
    if completion.stream:
        response: HttpResponseBase = StreamingHttpResponse(call.sse(), content_type="text/event-stream")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"  # a proxy in front must not hold chunks back
    else:
        final = await call.wait()
        response = call.completion(final) if final["status"] not in FAILED else error_response(reply_failure(final))
    if completion.store:
        response["X-Chatsite-Session"] = str(session.pk)
    return response
