"""Reads. Every lookup of a user's object goes through here and checks its owner."""

from __future__ import annotations

from typing import Any

from django.db.models import Q, QuerySet

from inference.backends.base import ChatMessage
from sessions_app.live import live_fresher
from sessions_app.models import Message, Participant, Session


def session_list_for_user(*, user: Any, archived: bool | None = None, search: str = "") -> QuerySet[Session]:
    """The user's sessions, newest first; ``search`` matches the title or any message's text.
    Consultations (``ask_agent``'s sessions, ``consulted_by`` set) are not listed: each is read
    by id from the reply that asked."""
    qs = Session.objects.filter(owner=user, consulted_by__isnull=True).select_related("agent")
    if archived is not None:
        qs = qs.filter(archived=archived)
    if search.strip():
        term = search.strip()
        matching = Message.objects.filter(session__owner=user, content__icontains=term).values("session_id")
        qs = qs.filter(Q(title__icontains=term) | Q(pk__in=matching))
    return qs


def session_get_for_user(*, user: Any, session_id: int | str) -> Session | None:
    """The session if ``user`` owns it; None otherwise (the caller answers 404)."""
    if not getattr(user, "is_authenticated", False):
        return None
    try:
        pk = int(session_id)
    except (TypeError, ValueError):
        return None
    return Session.objects.select_related("agent").filter(pk=pk, owner=user).first()


def message_list(*, session: Session, role: str = "", status: str = "") -> QuerySet[Message]:
    qs = session.messages.select_related("agent").order_by("created_at", "pk")
    if role:
        qs = qs.filter(role=role)
    if status:
        qs = qs.filter(status=status)
    return qs


def history_for_reply(message: Message) -> list[ChatMessage]:
    """The conversation before this reply, oldest first, as its agent sees it.

    Its own agent's earlier turns are ``assistant``; every other agent's turn is a ``user``
    message prefixed with that agent's name ("Poet: …"), so that no agent reads another's words
    as its own. Such a turn is joined to a neighbouring ``user`` message (many chat templates
    want turns to alternate). In a session with one agent this is the plain conversation. Each
    turn is its ``content`` only: earlier thinking stays out of later prompts, as Qwen and
    DeepSeek advise for their reasoning models.
    """
    return history_as_seen(session_id=message.session_id, before=message.pk, agent_id=message.agent_id)


def history_as_seen(*, session_id: int, before: int | None, agent_id: int | None) -> list[ChatMessage]:
    """The conversation before message ``before`` (all of it when None), as agent ``agent_id``
    sees it (see ``history_for_reply``)."""
    messages = Message.objects.filter(session_id=session_id)
    if before is not None:
        messages = messages.filter(pk__lt=before)
    earlier = (
        messages.exclude(role=Message.Role.ASSISTANT, status__in=[Message.Status.FAILED, Message.Status.QUEUED])
        .exclude(content="")
        .order_by("pk")
        .values_list("role", "content", "agent_id", "agent__name", "pk", "reply_to_id")
    )
    kept = _compare_kept(session_id)
    history: list[ChatMessage] = []
    joined_last = False  # whether the last entry holds another agent's turn
    for role, content, speaker_id, agent_name, pk, reply_to_id in earlier:
        if role == Message.Role.SYSTEM:
            continue
        if reply_to_id in kept and kept[reply_to_id] != pk:
            continue  # of a compare, only the reply picked (else the first) goes on
        other = role == Message.Role.ASSISTANT and speaker_id != agent_id
        if other:
            role, content = Message.Role.USER, f"{agent_name or 'Another agent'}: {content}"
        if history and history[-1]["role"] == role and (other or joined_last):
            history[-1] = {"role": role, "content": f"{history[-1]['content']}\n\n{content}"}
            joined_last = True
        else:
            history.append({"role": role, "content": content})
            joined_last = other
    return history


def message_payload(message: Message) -> dict[str, Any]:
    """The JSON shape of a message in events and the API."""
    agent = message.agent
    return {
        "id": message.pk,
        "session": message.session_id,
        "role": message.role,
        "agent": agent.slug if agent is not None else None,
        "agent_name": agent.name if agent is not None else None,
        "agent_avatar": _avatar(agent),
        "reply_to": message.reply_to_id,
        "turn": message.turn,
        "compare": bool((message.turns or {}).get("compare")),
        "picked": bool((message.turns or {}).get("picked")),
        "content": message.content,
        # A reasoning model's thinking (and how long it lasted, in ms): never part of ``content``.
        "reasoning": message.reasoning,
        "reasoning_ms": message.reasoning_ms,
        # The agent's tool calls on the way to this reply, in order (sessions_app.tools.ToolRun).
        "tool_calls": list(message.tool_calls or []),
        "status": message.status,
        "error": message.error,
        "client_id": message.client_id,
        "seq": message.seq,
        "backend": message.backend,
        "model": message.model_name,
        "finish_reason": message.finish_reason,
        "stats": {
            "prompt_tokens": message.prompt_tokens,
            "completion_tokens": message.completion_tokens,
            "ttft_ms": message.ttft_ms,
            "decode_tps": message.decode_tps,
            "reasoning_tokens": message.reasoning_tokens,
        },
        "created_at": message.created_at.isoformat() if message.created_at else None,
        "started_at": message.started_at.isoformat() if message.started_at else None,
        "finished_at": message.finished_at.isoformat() if message.finished_at else None,
    }


def _avatar(agent: Any) -> str | None:
    """The agent's picture: its image's URL, else its emoji."""
    if agent is None:
        return None
    return agent.avatar_image.url if agent.avatar_image else agent.avatar_emoji or None


def message_payload_live(message: Message) -> dict[str, Any]:
    """``message_payload``, with a streaming reply's text (and thinking) from the live buffer when
    that is fresher than the database's last save (the buffer is written before each delta is sent)."""
    payload = message_payload(message)
    if message.status == Message.Status.STREAMING:
        live = live_fresher(
            message_id=message.pk, content=message.content, seq=message.seq, reasoning=message.reasoning
        )
        payload.update(content=live.content, seq=live.seq, reasoning=live.reasoning)
    return payload


def message_states(*, session_id: int, message_ids: list[int]) -> dict[int, dict[str, Any]]:
    """The live payloads of these messages of one session; a deleted one is absent."""
    rows = Message.objects.select_related("agent").filter(session_id=session_id, pk__in=message_ids)
    return {message.pk: message_payload_live(message) for message in rows}


def _compare_kept(session_id: int) -> dict[int, int]:
    """For each compared user message of the session: the reply that stays in the conversation,
    the one picked, else the first that completed."""
    compared = Message.objects.filter(session_id=session_id, role=Message.Role.USER, turns__policy="compare")
    kept: dict[int, int] = {}
    for user_message_id, winner in compared.values_list("pk", "pick__winner_id"):
        if winner is None:
            winner = (
                Message.objects.filter(reply_to_id=user_message_id, status=Message.Status.COMPLETE)
                .order_by("pk")
                .values_list("pk", flat=True)
                .first()
            )
        kept[user_message_id] = winner or 0
    return kept


def participant_slugs(session: Session) -> list[str]:
    """The session's participants in order (the first is its default agent)."""
    return list(Participant.objects.filter(session=session).values_list("agent__slug", flat=True))


def session_payload(session: Session, *, participants: bool = True) -> dict[str, Any]:
    """A session as events and pages show it; ``participants=False`` (the sidebar's long list)
    leaves out ``agents`` and ``turn_policy`` and saves a query per session."""
    payload: dict[str, Any] = {
        "id": session.pk,
        "title": session.title,
        "agent": session.agent.slug if session.agent else None,
        "archived": session.archived,
        # A consultation: the id of the reply whose ask_agent call opened it (None: the user's chat).
        "consulted_by": session.consulted_by_id,
    }
    if participants:
        payload["agents"] = participant_slugs(session)
        payload["turn_policy"] = session.turn_policy
    return payload


def session_export(*, session: Session) -> dict[str, Any]:
    """The whole session as plain data: what the JSON export holds and the Markdown one renders."""
    return {
        "session": {
            "id": session.pk,
            "title": session.title,
            "agent": session.agent.slug if session.agent else None,
            "agents": participant_slugs(session),
            "turn_policy": session.turn_policy,
            "archived": session.archived,
            "created_at": session.created_at.isoformat(),
            "updated_at": session.updated_at.isoformat(),
        },
        "messages": [message_payload(message) for message in message_list(session=session)],
    }
