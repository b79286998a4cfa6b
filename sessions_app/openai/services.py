"""Chat completions as sessions of the caller: keep the call, queue its reply on the same workers
as chat, and read how it ended.

The view calls these in order: ``completion_validate`` (``request``), ``completion_session_create``,
then, once it listens on the session's group, ``completion_start``; ``completion_discard`` when the
caller asked not to store the call.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from sessions_app import services
from sessions_app.live import CADENCE_TOKEN
from sessions_app.models import Message, Session
from sessions_app.openai.errors import CompletionError
from sessions_app.openai.request import CompletionRequest


def completion_session_create(*, user: Any, request: CompletionRequest) -> Session:
    """The session that keeps this call; it lists in the web UI like any other."""
    return services.session_create(owner=user, agent=request.agent, title=" ".join(request.prompt.split())[:60])


def completion_start(*, session: Session, request: CompletionRequest) -> Message:
    """Store the earlier turns as finished messages and queue the reply to the last one.

    The reply is enqueued once this commits, so a caller that joined ``session.group_name``
    before calling misses none of its events. On a refusal the session is deleted.
    """
    try:
        with transaction.atomic():
            Message.objects.bulk_create(
                Message(
                    session=session,
                    role=turn["role"],
                    content=turn["content"],
                    status=Message.Status.COMPLETE,
                    agent=request.agent if turn["role"] == Message.Role.ASSISTANT else None,
                )
                for turn in request.history
            )
            # A streamed answer goes out token by token, at the engine's cadence.
            params = {**request.params, "cadence": CADENCE_TOKEN} if request.stream else request.params
            _, reply = services.message_send(
                session=session, content=request.prompt, agent=request.agent, params=params
            )
            assert reply is not None  # an agent is named: it answers
    except services.ChatError as exc:
        services.session_delete(session=session)
        raise CompletionError(exc.message, code=exc.code, param="messages") from exc
    return reply


def completion_stop(*, session: Session, message_id: int) -> None:
    """The caller went away mid-reply: stop generating (the partial text is kept)."""
    services.reply_stop(session=session, message_id=message_id)


def completion_discard(*, session: Session) -> None:
    """Forget a call made with ``store: false``, its reply stopped if it still runs."""
    services.session_delete(session=session)


def completion_finish_reason(*, request: CompletionRequest, reply: dict[str, Any]) -> str:
    """The engine's own finish reason; for engines that give none, "length" when the reply used
    every token it was allowed, else "stop"."""
    if reply.get("finish_reason") in ("stop", "length"):
        return str(reply["finish_reason"])
    produced = reply["stats"]["completion_tokens"] or 0
    return "length" if produced >= request.max_tokens else "stop"
