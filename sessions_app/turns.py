"""Turn services: a session's participants, and a multi-agent chain's progression.

The policies themselves (who answers, in which order) are decisions in ``sessions_app.policy``;
the supervisor's model call is ``sessions_app.supervisor``. Here are the writes they lead to.

When a user message is sent its plan (the speakers, in order) is stored on it; the first reply is
queued at once (``reply_create``), and each next one is queued by the worker that stored the
previous reply, once it is stored: the reply task (``sessions_app.tasks.reply_generate``) calls
``turn_next`` after the reply, never a web process. A reply that does not end ``complete``
(stopped, failed, interrupted) ends the chain, and a stop marks the chain stopped so that a reply
finishing at that very moment starts nothing either. Under a supervisor each next turn is a pick
(``choose_enqueue``) that the supervisor's worker makes.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from django.db import transaction
from django.utils import timezone

from agents.models import Agent
from sessions_app import broadcast, dispatch, policy
from sessions_app.models import Message, Participant, Session, TurnChoice
from sessions_app.notes import note_add
from sessions_app.selectors import message_payload
from sessions_app.unavailable import BROKER_ERRORS, BrokerUnavailable

log = logging.getLogger(__name__)


def participants_of(session: Session) -> list[Agent]:
    return [p.agent for p in Participant.objects.filter(session=session).select_related("agent", "agent__model")]


def participants_set(session: Session, agents: list[Agent]) -> None:
    """Make ``agents`` the session's participants, in this order; the first becomes the default."""
    Participant.objects.filter(session=session).exclude(agent__in=agents).delete()
    for position, agent in enumerate(agents):
        Participant.objects.update_or_create(session=session, agent=agent, defaults={"position": position})
    session.agent = agents[0] if agents else None
    session.save(update_fields=["agent", "updated_at"])


def participant_add(session: Session, agent: Agent) -> None:
    """Add ``agent`` at the end unless it takes part already."""
    if not Participant.objects.filter(session=session, agent=agent).exists():
        position = Participant.objects.filter(session=session).count()
        Participant.objects.create(session=session, agent=agent, position=position)


def supervised(session: Session) -> Agent | None:
    """The supervisor agent when the session's policy is ``supervisor``."""
    turn_policy = session.turn_policy or {}
    if turn_policy.get("kind") != "supervisor":
        return None
    return Agent.objects.filter(slug=turn_policy.get("supervisor"), is_active=True).select_related("model").first()


def speakers_plan(session: Session, content: str, agent: Agent | None) -> list[str]:
    """Who answers a user message, in order (slugs). ``agent``, when given, answers alone.
    Empty under a supervisor: it picks each speaker as the chain goes."""
    if agent is not None:
        return [agent.slug]
    turn_policy = session.turn_policy or {}
    if turn_policy.get("kind") == "supervisor":
        return []
    slugs = [a.slug for a in participants_of(session) if a.is_active]
    default = session.agent.slug if session.agent is not None else (slugs[0] if slugs else "")
    return policy.speakers(turn_policy, slugs, default, content)


def chain_completed(user_message: Message) -> list[bool]:
    """Whether each reply to ``user_message`` so far, in order, ended ``complete``."""
    return chain_completed_of(user_message.pk)


def chain_completed_of(user_message_id: int) -> list[bool]:
    chain = Message.objects.filter(reply_to_id=user_message_id, role=Message.Role.ASSISTANT).order_by("pk")
    return [status == Message.Status.COMPLETE for status in chain.values_list("status", flat=True)]


def chain_stop(user_message_ids: list[int]) -> None:
    """Start no further turns for these user messages (a stop was asked for)."""
    for message in Message.objects.filter(pk__in=user_message_ids, role=Message.Role.USER):
        if message.turns and not message.turns.get("stopped"):
            message.turns = {**message.turns, "stopped": True}
            message.save(update_fields=["turns"])
    # A pick not yet started is not started; one under way sees the flag when it ends.
    TurnChoice.objects.filter(user_message_id__in=user_message_ids, status=TurnChoice.Status.QUEUED).update(
        status=TurnChoice.Status.CANCELLED, finished_at=timezone.now()
    )


def choices_pending(session_id: int) -> list[int]:
    """The user messages of the session whose supervisor is being asked who speaks next."""
    pending = TurnChoice.objects.filter(
        user_message__session_id=session_id, status__in=[TurnChoice.Status.QUEUED, TurnChoice.Status.CHOOSING]
    )
    return list(pending.values_list("user_message_id", flat=True).distinct())


def turn_next(*, reply_id: int) -> Message | None:
    """After the reply ``reply_id`` ended: queue the next speaker of its chain, if any (None when
    the chain ends, or goes on with a supervisor's pick). Safe to call twice: the next turn, once
    queued, is not complete, so a second call finds the chain running."""
    row = Message.objects.filter(pk=reply_id).values_list("reply_to_id", "status").first()
    if row is None or row[0] is None or row[1] != Message.Status.COMPLETE:
        return None  # a reply that stopped, failed or was interrupted ends its chain
    user_message_id = row[0]
    # Read first without a lock: most replies end a chain of one (a single agent), and the row
    # lock below would otherwise be taken after every reply. The locked read decides.
    planned = Message.objects.filter(pk=user_message_id).values_list("turns", flat=True).first()
    if planned is None or policy.turn_after(planned, chain_completed_of(user_message_id)) is None:
        return None
    with transaction.atomic():
        user_message = Message.objects.select_for_update().filter(pk=user_message_id).first()
        if user_message is None:
            return None
        completed = chain_completed(user_message)
        speaker = policy.turn_after(user_message.turns, completed)
        if speaker is None:
            return None
        if speaker == policy.CHOOSE:
            choose_enqueue(user_message)
            return None
        agent = Agent.objects.filter(slug=speaker, is_active=True).select_related("model").first()
        if agent is None:
            log.warning(
                "turn %s of message %s: agent %r is gone; the chain ends", len(completed) + 1, user_message.pk, speaker
            )
            return None
        session = Session.objects.get(pk=user_message.session_id)
        return reply_create_turn(session, user_message, agent, turn=len(completed) + 1)


def choose_enqueue(user_message: Message) -> TurnChoice | None:
    """Ask the supervisor, on its own queue, who answers next (the task is sent on commit). Call
    in a transaction."""
    session = Session.objects.get(pk=user_message.session_id)
    supervisor = supervised(session)
    if supervisor is None:
        note_add(user_message, "The supervisor of this session is gone; the round ends.")
        return None
    done = Message.objects.filter(reply_to=user_message, role=Message.Role.ASSISTANT).count()
    choice = TurnChoice.objects.create(user_message=user_message, turn=done + 1)
    transaction.on_commit(partial(_choice_send, choice, supervisor.queue))
    return choice


def _choice_send(choice: TurnChoice, queue: str) -> None:
    try:
        dispatch.turn_choose_enqueue(user_message_id=choice.user_message_id, queue=queue)
    except BROKER_ERRORS as exc:
        # Nothing would ever run the pick: the round ends now, with a note, and the caller hears why.
        log.warning(
            "the pick for message %s could not be queued: %s: %s", choice.user_message_id, type(exc).__name__, exc
        )
        with transaction.atomic():
            if TurnChoice.objects.filter(pk=choice.pk, status=TurnChoice.Status.QUEUED).update(
                status=TurnChoice.Status.FAILED, error=f"Not queued: {exc}", finished_at=timezone.now()
            ):
                note_add(
                    choice.user_message,
                    "The message broker (Redis) was unavailable, so the supervisor was never asked who answers; "
                    "the round ends. Send the message again in a moment.",
                )
        raise BrokerUnavailable(
            "Your message is saved, but the supervisor could not be asked who answers: the message broker "
            "(Redis) is unavailable. Send it again in a moment."
        ) from exc


def reply_create_turn(session: Session, user_message: Message, agent: Agent, *, turn: int) -> Message:
    """The next turn of a multi-agent chain (``turn_next``, or the supervisor's pick, on a worker):
    queued, announced with a ``turn`` event, enqueued on its agent's queue on commit."""
    with transaction.atomic():
        reply = reply_create(session, user_message, agent, turn=turn)
        event = {
            "reply_to": user_message.pk,
            "message_id": reply.pk,
            "agent": agent.slug,
            "agent_name": agent.name,
            "turn": turn,
            "turns": len(user_message.turns.get("speakers") or []) or user_message.turns.get("max_turns"),
        }
        transaction.on_commit(lambda: broadcast.turn_send(session.pk, event))
    return reply


def reply_create(
    session: Session,
    user_message: Message,
    agent: Agent,
    *,
    params: dict[str, Any] | None = None,
    turn: int = 1,
    compare: bool = False,
) -> Message:
    """A queued reply to ``user_message``; announced and enqueued on commit. Call in a transaction."""
    reply = Message.objects.create(
        turn=turn,
        turns={"compare": True} if compare else {},
        params=params or {},
        session=session,
        role=Message.Role.ASSISTANT,
        agent=agent,
        reply_to=user_message,
        status=Message.Status.QUEUED,
        backend=agent.backend,
        model_name=agent.model.name if agent.model is not None else "",
    )
    participant_add(session, agent)
    Session.objects.filter(pk=session.pk).update(updated_at=timezone.now())

    def announce() -> None:
        try:
            broadcast.message_send(session.pk, message_payload(reply))
        finally:
            try:
                dispatch.reply_enqueue(message_id=reply.pk, queue=agent.queue)
            except BROKER_ERRORS as exc:
                _reply_not_queued(reply, exc)

    transaction.on_commit(announce)
    return reply


def _reply_not_queued(reply: Message, exc: BaseException) -> None:
    """The broker refused the reply's task: the reply fails at once (nothing would ever run it)
    and the caller hears why; the user's message stays stored."""
    log.warning("reply %s could not be queued: %s: %s", reply.pk, type(exc).__name__, exc)
    Message.objects.filter(pk=reply.pk, status=Message.Status.QUEUED).update(
        status=Message.Status.FAILED,
        error="The message broker (Redis) was unavailable, so this reply was never started. Regenerate it.",
        finished_at=timezone.now(),
    )
    reply.refresh_from_db()
    broadcast.done_send(reply.session_id, message_payload(reply))
    raise BrokerUnavailable(
        "Your message is saved, but its reply could not be started: the message broker (Redis) is "
        "unavailable. Regenerate the reply in a moment."
    ) from exc
