"""Writes. The websocket consumer, the REST views, the admin and the terminal chat all call these."""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from agents.models import Agent
from agents.selectors import agent_default_for_user, agent_get_for_user
from inference.errors import PlatformError
from sessions_app import broadcast, leaderboard, turns
from sessions_app.models import Message, Participant, Pick, Session
from sessions_app.policy import PolicyError, policy_validate
from sessions_app.selectors import message_payload

log = logging.getLogger(__name__)


class ChatError(PlatformError):
    """Bad input from a client; ``code`` is machine-readable, the message is for a person. The
    ``field`` defaults to the argument a code is about (the doors' request fields have its name)."""

    FIELDS = {
        "invalid_content": "content", "empty_content": "content", "content_too_long": "content",
        "invalid_client_id": "client_id", "unknown_agent": "agent", "invalid_compare": "compare",
    }  # fmt: skip

    def __init__(self, code: str, message: str, *, field: str | None = None, status: int | None = None) -> None:
        status = status or (404 if code == "not_found" else None)
        super().__init__(message, code=code, field=field or self.FIELDS.get(code), status=status)


def agent_check_usable(*, user: Any, slug: Any) -> Agent:
    """The agent ``slug`` if ``user`` may chat with it; raises ChatError otherwise."""
    agent = agent_get_for_user(user=user, slug=slug)
    if agent is None:
        raise ChatError("unknown_agent", f"No agent {slug!r} that you may use.")
    return agent


def session_create(
    *,
    owner: Any,
    agent: Agent | None = None,
    title: str = "",
    agents: list[Agent] | None = None,
    turn_policy: Any = None,
) -> Session:
    """A new session. ``agents`` are its participants in order (the first is the default agent);
    without them, ``agent`` or the user's default agent alone. Raises PolicyError for a policy
    that cannot work with them."""
    if not agents:
        agent = agent or agent_default_for_user(user=owner)
        agents = [agent] if agent is not None else []
    policy = policy_validate(turn_policy or {"kind": "manual"}, [a.slug for a in agents])
    with transaction.atomic():
        session = Session.objects.create(
            owner=owner, agent=agents[0] if agents else None, title=title.strip()[:200], turn_policy=policy
        )
        # A new session has no participants yet: one insert (the request path of /v1 runs this).
        Participant.objects.bulk_create(Participant(session=session, agent=a, position=i) for i, a in enumerate(agents))
    return session


def session_update(
    *,
    session: Session,
    title: str | None = None,
    archived: bool | None = None,
    agents: list[Agent] | None = None,
    turn_policy: Any = None,
) -> Session:
    """Change a session; new ``agents`` and ``turn_policy`` are checked together (PolicyError)."""
    if agents is not None or turn_policy is not None:
        slugs = [a.slug for a in agents] if agents is not None else [a.slug for a in turns.participants_of(session)]
        if agents is not None and not agents:
            raise PolicyError("agents", "A session needs at least one agent.")
        policy = policy_validate(turn_policy if turn_policy is not None else session.turn_policy, slugs)
        with transaction.atomic():
            if agents is not None:
                turns.participants_set(session, agents)
            session.turn_policy = policy
            session.save(update_fields=["turn_policy", "updated_at"])
    fields = ["updated_at"]
    if title is not None:
        session.title = title.strip()[:200]
        fields.append("title")
    if archived is not None:
        session.archived = archived
        fields.append("archived")
    session.save(update_fields=fields)
    return session


def session_delete(*, session: Session) -> None:
    for message_id in session.messages.filter(status__in=[Message.Status.QUEUED, Message.Status.STREAMING]).values_list(
        "pk", flat=True
    ):
        Message.objects.filter(pk=message_id).update(cancel_requested=True)
    session.delete()


def _check_content(content: Any) -> str:
    if not isinstance(content, str):
        raise ChatError("invalid_content", "content must be a string.")
    if not content.strip():
        raise ChatError("empty_content", "The message is empty.")
    if len(content) > settings.MESSAGE_MAX_CHARS:
        raise ChatError(
            "content_too_long",
            f"The message has {len(content)} characters; the limit is {settings.MESSAGE_MAX_CHARS}.",
        )
    return content


def message_send(
    *,
    session: Session,
    content: Any,
    client_id: str | None = None,
    agent: Agent | None = None,
    params: dict[str, Any] | None = None,
) -> tuple[Message, Message | None]:
    """Store a user message and queue the agent's reply; return both. Under a supervisor the
    reply is None: the supervisor picks the first speaker on its worker.

    A message resent with the same ``client_id`` is not stored twice: the first one and its reply
    come back instead. The reply is queued only once the transaction has committed.
    """
    content = _check_content(content)
    if client_id is not None and (not isinstance(client_id, str) or not 0 < len(client_id) <= 100):
        raise ChatError("invalid_client_id", "client_id must be a string of 1 to 100 characters.")
    speakers = turns.speakers_plan(session, content, agent)
    supervisor = turns.supervised(session) if agent is None else None
    plan: dict[str, Any] = {"speakers": speakers, "policy": (session.turn_policy or {}).get("kind", "manual")}
    if supervisor is not None:
        plan["max_turns"] = int(session.turn_policy.get("max_turns", 1))
        agent = supervisor  # the limits below are the supervisor's
    elif agent is None and speakers:
        agent = Agent.objects.filter(slug=speakers[0]).select_related("model").first()
    if agent is None or not agent.is_active:
        raise ChatError("no_agent", "This session has no active agent to answer.")
    _check_length(content, agent)
    if client_id is not None:
        existing = _resent(session, client_id)
        if existing is not None:
            return existing
    try:
        with transaction.atomic():
            user_message = _user_message_create(session, content, client_id, plan)
            if supervisor is not None:
                turns.choose_enqueue(user_message)
                return user_message, None
            reply = turns.reply_create(session, user_message, agent, params=params)
    except IntegrityError:
        # The same client_id raced in from another connection: answer with the stored one.
        existing = _resent(session, client_id or "")
        if existing is None:
            raise
        return existing
    return user_message, reply


def _check_length(content: str, agent: Agent) -> None:
    if len(content) > agent.max_prompt_chars:
        raise ChatError(
            "content_too_long",
            f"The message has {len(content)} characters; {agent.slug} accepts at most {agent.max_prompt_chars}.",
        )


def _user_message_create(session: Session, content: str, client_id: str | None, plan: dict[str, Any]) -> Message:
    """The user's message with its turn plan; titles an untitled session; announced on commit."""
    user_message = Message.objects.create(
        session=session, role=Message.Role.USER, content=content, client_id=client_id, turns=plan
    )
    if not session.title:
        session.title = " ".join(content.split())[:60]
        session.save(update_fields=["title", "updated_at"])
    transaction.on_commit(lambda: broadcast.message_send(session.pk, message_payload(user_message)))
    return user_message


COMPARE_MIN, COMPARE_MAX = 2, 4


def message_compare(
    *, session: Session, content: Any, agents: list[Agent], client_id: str | None = None
) -> tuple[Message, list[Message]]:
    """Store a user message answered by all of ``agents`` at once (compare mode): one queued reply
    each, on each agent's queue, in parallel. The user then picks the best (``reply_pick``)."""
    content = _check_content(content)
    slugs = [a.slug for a in agents]
    if not COMPARE_MIN <= len(agents) <= COMPARE_MAX or len(set(slugs)) != len(slugs):
        raise ChatError("invalid_compare", f"Compare {COMPARE_MIN} to {COMPARE_MAX} different agents.")
    for agent in agents:
        _check_length(content, agent)
    with transaction.atomic():
        user_message = _user_message_create(session, content, client_id, {"speakers": slugs, "policy": "compare"})
        replies = [
            turns.reply_create(session, user_message, agent, turn=i + 1, compare=True) for i, agent in enumerate(agents)
        ]
    return user_message, replies


def reply_pick(*, session: Session, message_id: Any) -> Pick:
    """The user picks ``message_id`` as the best of the replies compared for its message; a new
    pick replaces the earlier one."""
    reply = (
        session.messages.filter(pk=message_id, role=Message.Role.ASSISTANT).select_related("reply_to", "agent").first()
    )
    if reply is None:
        raise ChatError("not_found", "No such reply in this session.")
    user_message = reply.reply_to
    if user_message is None or (user_message.turns or {}).get("policy") != "compare":
        raise ChatError("not_compared", "Only a reply of a compare can be picked.")
    unfinished = user_message.replies.filter(status__in=[Message.Status.QUEUED, Message.Status.STREAMING])
    if unfinished.exists():
        raise ChatError("compare_running", "Wait until every compared reply has finished, then pick.")
    if reply.status != Message.Status.COMPLETE:
        raise ChatError("not_complete", "Pick a reply that completed.")
    with transaction.atomic():
        pick, _ = Pick.objects.update_or_create(user_message=user_message, defaults={"winner": reply})
        for compared in user_message.replies.all():
            compared.turns = {**compared.turns, "picked": compared.pk == reply.pk}
            compared.save(update_fields=["turns"])
        leaderboard.leaderboard_touch()
        event = {"reply_to": user_message.pk, "picked": reply.pk}
        transaction.on_commit(_leaderboard_refresh)  # first: it never raises, the broadcast may
        transaction.on_commit(lambda: broadcast.picked_send(session.pk, event))
    return pick


def _leaderboard_refresh() -> None:
    """Compute the leaderboard now that a pick is stored. A failure leaves it stale: the next
    read computes it."""
    try:
        leaderboard.leaderboard_refresh()
    except Exception:
        log.exception("computing the leaderboard after a pick failed; the next read computes it")


def _resent(session: Session, client_id: str) -> tuple[Message, Message] | None:
    first = session.messages.filter(client_id=client_id, role=Message.Role.USER).first()
    if first is None:
        return None
    reply = first.replies.order_by("pk").first()
    if reply is None:
        return None
    return first, reply


def reply_stop(*, session: Session, message_id: int | None = None) -> list[int]:
    """Stop the session's unfinished replies (or one of them). Returns the ids asked to stop.

    A queued reply is cancelled here and then; a streaming one is flagged, and its worker ends it
    (keeping the partial text) the next time it polls.
    """
    pending = session.messages.filter(
        role=Message.Role.ASSISTANT, status__in=[Message.Status.QUEUED, Message.Status.STREAMING]
    )
    if message_id is not None:
        pending = pending.filter(pk=message_id)
    else:
        # A supervisor deciding who speaks next has no reply yet: its round stops all the same.
        turns.chain_stop(turns.choices_pending(session.pk))
    ids = list(pending.values_list("pk", flat=True))
    if not ids:
        return []
    # One stop ends the whole chain: no further turn starts after these.
    turns.chain_stop(list(pending.values_list("reply_to_id", flat=True)))
    Message.objects.filter(pk__in=ids).update(cancel_requested=True)
    now = timezone.now()
    for pk in ids:
        cancelled = Message.objects.filter(pk=pk, status=Message.Status.QUEUED).update(
            status=Message.Status.CANCELLED, finished_at=now
        )
        if cancelled:
            payload = message_payload(Message.objects.select_related("agent").get(pk=pk))
            transaction.on_commit(partial(broadcast.done_send, session.pk, payload))
    return ids


def _truncate_after(session: Session, message: Message, *, keep: bool) -> list[int]:
    """Delete the messages after ``message`` (and it too unless ``keep``); stop their replies first."""
    later = session.messages.filter(pk__gt=message.pk) if keep else session.messages.filter(pk__gte=message.pk)
    ids = list(later.values_list("pk", flat=True))
    if not ids:
        return []
    Message.objects.filter(pk__in=ids).update(cancel_requested=True)
    # A worker still streaming one of these finds its row gone and stops writing.
    Message.objects.filter(pk__in=ids).delete()
    transaction.on_commit(lambda: broadcast.deleted_send(session.pk, ids))
    return ids


def _answering_agent(session: Session, user_message: Message) -> Agent:
    """The agent that answered this message before, else the session's; it must be active."""
    speakers = (user_message.turns or {}).get("speakers") or []
    planned = Agent.objects.filter(slug=speakers[0]).first() if speakers else None
    previous = user_message.replies.order_by("pk").first()
    agent = planned or (previous.agent if previous is not None else None) or session.agent
    if agent is None or not agent.is_active:
        raise ChatError("no_agent", "This session has no active agent to answer.")
    return agent


def reply_regenerate(*, session: Session) -> Message:
    """Replace the session's last reply with a new one to the same user message."""
    last_user = session.messages.filter(role=Message.Role.USER).order_by("-pk").first()
    if last_user is None:
        raise ChatError("nothing_to_regenerate", "This session has no message to answer again.")
    agent = _answering_agent(session, last_user)
    with transaction.atomic():
        _truncate_after(session, last_user, keep=True)
        if last_user.turns.get("stopped"):
            last_user.turns = {k: v for k, v in last_user.turns.items() if k != "stopped"}
            last_user.save(update_fields=["turns"])
        reply = turns.reply_create(session, last_user, agent)
    return reply


def message_edit(*, session: Session, message_id: Any, content: Any) -> tuple[Message, Message]:
    """Change a user message and answer it again. The conversation after it is replaced, not
    branched: later messages are deleted, as in most chat UIs."""
    content = _check_content(content)
    if not isinstance(message_id, int):
        raise ChatError("invalid_message_id", "message_id must be an integer.")
    message = session.messages.filter(pk=message_id, role=Message.Role.USER).first()
    if message is None:
        raise ChatError("not_found", "No such message of yours in this session.")
    with transaction.atomic():
        _truncate_after(session, message, keep=True)
        message.content = content
        # The mentions may have changed: plan the turns again.
        speakers = turns.speakers_plan(session, content, None)
        message.turns = {"speakers": speakers, "policy": (session.turn_policy or {}).get("kind", "manual")}
        message.save(update_fields=["content", "turns"])
        agent = _answering_agent(session, message)
        transaction.on_commit(lambda: broadcast.message_send(session.pk, message_payload(message)))
        reply = turns.reply_create(session, message, agent)
    return message, reply
