"""Who answers a user message in a session with several agents: the turn policies.

A session holds an ordered list of participants (the first is its default agent) and a turn
policy, one of:

- ``{"kind": "manual"}``: the agents named with ``@slug`` answer, in the order named; no mention,
  the default agent.
- ``{"kind": "round_robin", "rounds": N}``: every participant answers in order, N rounds.
- ``{"kind": "debate", "rounds": N, "judge": "slug"}``: the first two participants other than the
  judge argue for N rounds (one turn each per round), then the judge gives the verdict.
- ``{"kind": "supervisor", "supervisor": "slug", "max_turns": N}``: before each turn the supervisor
  agent is asked, on its own worker, who speaks next (or ``END``); its answer must be exactly a
  participant's slug or ``END``. Anything else ends the round with a visible note, never a loop;
  so does a supervisor whose model call fails, or whose worker dies while it decides (each pick is
  a ``TurnChoice`` row with a lease, which the reaper ends).

Every policy is capped at ``MULTI_AGENT_MAX_TURNS`` replies per user message. When a user message
is sent its plan (the speakers, in order) is stored on it; the first reply is queued at once, and
each next one is queued by the worker that stored the previous reply, once it is stored
(``turn_next``, called on commit), never by a web process. A reply that does not end
``complete`` (stopped, failed, interrupted) ends the chain, and a stop marks the chain stopped so
that a reply finishing at that very moment starts nothing either.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Annotated, Any, Literal

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from agents.models import Agent
from inference.backends.base import BackendError
from sessions_app.liveness import heartbeat_seconds, worker_name
from sessions_app.models import Message, Participant, Session, TurnChoice
from sessions_app.unavailable import BROKER_ERRORS, BrokerUnavailable

log = logging.getLogger(__name__)

MAX_ROUNDS = 10


class _Policy(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Manual(_Policy):
    kind: Literal["manual"]


class RoundRobin(_Policy):
    kind: Literal["round_robin"]
    rounds: int = Field(1, ge=1, le=MAX_ROUNDS, description="How many times every participant answers.")


class Debate(_Policy):
    kind: Literal["debate"]
    rounds: int = Field(2, ge=1, le=MAX_ROUNDS, description="Turns each debater takes.")
    judge: str = Field(description="Slug of the participant who gives the verdict.")


class Supervisor(_Policy):
    kind: Literal["supervisor"]
    supervisor: str = Field(description="Slug of the participant who picks each next speaker.")
    max_turns: int = Field(4, ge=1, description="Replies per user message at most (besides the picks).")


TurnPolicy = Annotated[Manual | RoundRobin | Debate | Supervisor, Field(discriminator="kind")]
_adapter: TypeAdapter[Manual | RoundRobin | Debate | Supervisor] = TypeAdapter(TurnPolicy)
KINDS = ("manual", "round_robin", "debate", "supervisor")


class PolicyError(Exception):
    """A turn policy that cannot work with these participants; ``field`` names what is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def max_turns() -> int:
    return int(settings.MULTI_AGENT_MAX_TURNS)


def policy_validate(raw: Any, participants: list[str]) -> dict[str, Any]:
    """The policy as stored, checked against the participants' slugs (in order)."""
    try:
        policy = _adapter.validate_python(raw)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in error["loc"] if str(p) not in KINDS)
        raise PolicyError(
            f"turn_policy.{where}" if where else "turn_policy",
            f"{where or 'turn_policy'}: {error['msg']} (kinds: {', '.join(KINDS)})",
        ) from None
    if isinstance(policy, RoundRobin) and policy.rounds * max(len(participants), 1) > max_turns():
        raise PolicyError(
            "turn_policy.rounds",
            f"{policy.rounds} rounds of {len(participants)} agents is more than {max_turns()} turns per message.",
        )
    if isinstance(policy, Debate):
        if policy.judge not in participants:
            raise PolicyError("turn_policy.judge", f"The judge {policy.judge!r} is not a participant of this session.")
        if len([p for p in participants if p != policy.judge]) < 2:
            raise PolicyError("turn_policy", "A debate needs two participants besides the judge.")
        if 2 * policy.rounds + 1 > max_turns():
            raise PolicyError(
                "turn_policy.rounds", f"A debate of {policy.rounds} rounds is more than {max_turns()} turns."
            )
    if isinstance(policy, Supervisor):
        if policy.supervisor not in participants:
            raise PolicyError(
                "turn_policy.supervisor", f"The supervisor {policy.supervisor!r} is not a participant of this session."
            )
        if not [p for p in participants if p != policy.supervisor]:
            raise PolicyError("turn_policy", "A supervisor needs at least one other participant to pick.")
        if policy.max_turns > max_turns():
            raise PolicyError("turn_policy.max_turns", f"At most {max_turns()} turns per message.")
    return policy.model_dump()


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


_MENTION = re.compile(r"(?<![\w@])@([A-Za-z0-9][A-Za-z0-9_-]*)")


def mentions(content: str, slugs: list[str]) -> list[str]:
    """The participants named with ``@slug``, in the order first named."""
    named: list[str] = []
    for slug in _MENTION.findall(content):
        if slug in slugs and slug not in named:
            named.append(slug)
    return named


def supervised(session: Session) -> Agent | None:
    """The supervisor agent when the session's policy is ``supervisor``."""
    policy = session.turn_policy or {}
    if policy.get("kind") != "supervisor":
        return None
    return Agent.objects.filter(slug=policy.get("supervisor"), is_active=True).select_related("model").first()


def speakers_plan(session: Session, content: str, agent: Agent | None) -> list[str]:
    """Who answers a user message, in order (slugs). ``agent``, when given, answers alone.
    Empty under a supervisor: it picks each speaker as the chain goes."""
    if agent is not None:
        return [agent.slug]
    if (session.turn_policy or {}).get("kind") == "supervisor":
        return []
    slugs = [a.slug for a in participants_of(session) if a.is_active]
    default = session.agent.slug if session.agent is not None else (slugs[0] if slugs else "")
    kind = (session.turn_policy or {}).get("kind", "manual")
    policy = session.turn_policy or {}
    if kind == "round_robin" and slugs:
        plan = slugs * int(policy.get("rounds", 1))
    elif kind == "debate" and policy.get("judge") in slugs:
        debaters = [s for s in slugs if s != policy["judge"]][:2]
        plan = debaters * int(policy.get("rounds", 1)) + [policy["judge"]] if len(debaters) == 2 else [default]
    else:
        plan = mentions(content, slugs) or [default]
    return [s for s in plan if s][: max_turns()]


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


def turn_next(reply: Message) -> Message | None:
    """After ``reply`` was stored ``complete``: queue the next speaker of its chain, if any."""
    from sessions_app.services import reply_create_turn

    if reply.reply_to_id is None:
        return None
    with transaction.atomic():
        user_message = Message.objects.select_for_update().filter(pk=reply.reply_to_id).first()
        if user_message is None or user_message.turns.get("stopped"):
            return None
        speakers: list[str] = list(user_message.turns.get("speakers") or [])
        chain = list(Message.objects.filter(reply_to=user_message, role=Message.Role.ASSISTANT).order_by("pk"))
        if any(m.status != Message.Status.COMPLETE for m in chain):
            return None  # still running, or a turn stopped, failed or was interrupted: the chain ends
        index = len(chain)
        if user_message.turns.get("policy") == "compare":
            return None  # compared replies run side by side, not in turn
        if user_message.turns.get("policy") == "supervisor":
            limit = min(int(user_message.turns.get("max_turns") or 0), max_turns())
            if index < limit:
                choose_enqueue(user_message)
            return None
        if index >= len(speakers) or index >= max_turns():
            return None
        agent = Agent.objects.filter(slug=speakers[index], is_active=True).select_related("model").first()
        if agent is None:
            log.warning(
                "turn %s of message %s: agent %r is gone; the chain ends", index + 1, user_message.pk, speakers[index]
            )
            return None
        session = Session.objects.get(pk=user_message.session_id)
        return reply_create_turn(session, user_message, agent, turn=index + 1)


# --- the supervisor ------------------------------------------------------------------------------
#
# Each pick is a TurnChoice row: created ``queued`` with the turn it picks for, claimed
# ``choosing`` by the worker that asks the supervisor (a conditional update, so a repeated task
# does nothing), kept alive by a heartbeat while the model loads and answers, and ended once. A
# model call that raises ends the round with a note here; a worker that dies mid-pick stops the
# heartbeat, and the reaper (``sessions_app.reaper``) ends the round with a note. Either way the
# user sees why nothing more comes.

END = "END"
SUPERVISOR_INSTRUCTION = (
    "You run a conversation between the user and these agents:\n{roster}\n"
    "Decide who should speak next to serve the user's last request, or whether it has been answered. "
    "Reply with exactly one word: the name in brackets of the agent who speaks next, or END. "
    "Nothing else."
)
INTERRUPTED_NOTE = "The worker asking the supervisor who speaks next stopped before it answered; the round ends."


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
    from sessions_app.dispatch import turn_choose_enqueue

    try:
        turn_choose_enqueue(user_message_id=choice.user_message_id, queue=queue)
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


def choice_parse(answer: str, candidates: list[str]) -> str | None:
    """The supervisor's answer, strictly: a candidate's slug or END (case, brackets, quotes and a
    final full stop forgiven), else None."""
    word = answer.strip().strip("\"'`[]").rstrip(".").strip()
    if word.upper() == END:
        return END
    return next((slug for slug in candidates if slug.lower() == word.lower()), None)


def note_add(user_message: Message, text: str) -> Message:
    """A visible note in the conversation (a ``system`` message; no agent reads it)."""
    from sessions_app import broadcast
    from sessions_app.selectors import message_payload

    note = Message.objects.create(
        session_id=user_message.session_id, role=Message.Role.SYSTEM, content=text, reply_to=user_message
    )

    def announce() -> None:
        try:
            broadcast.message_send(note.session_id, message_payload(note))
        except Exception as exc:  # the note is stored: a client reading the session finds it
            log.warning("announcing note %s failed: %s: %s", note.pk, type(exc).__name__, exc)

    transaction.on_commit(announce)
    return note


def turn_choose(*, user_message_id: int) -> str | None:
    """On the supervisor's worker: claim the message's queued pick, ask the supervisor who speaks
    next and queue that turn. Returns the choice (None when there was nothing to do, or the round
    ended with a note). A second run of the same task finds nothing to claim."""
    choice = _choice_claim(user_message_id)
    if choice is None:
        return None
    try:
        with _choice_lease(choice.pk):
            return _choose_claimed(choice)
    except Exception as exc:  # the model call, or anything else: the round must end visibly
        log.exception("the supervisor's pick for message %s failed", user_message_id)
        _choice_fail(choice, exc)
        return None


def _choice_claim(user_message_id: int) -> TurnChoice | None:
    first = (
        TurnChoice.objects.filter(user_message_id=user_message_id, status=TurnChoice.Status.QUEUED)
        .order_by("pk")
        .first()
    )
    if first is None:
        return None
    now = timezone.now()
    claimed = TurnChoice.objects.filter(pk=first.pk, status=TurnChoice.Status.QUEUED).update(
        status=TurnChoice.Status.CHOOSING, worker=worker_name(), heartbeat_at=now
    )
    if not claimed:
        return None  # another run took it between the read and the claim
    first.refresh_from_db()
    return first


@contextmanager
def _choice_lease(choice_id: int) -> Iterator[None]:
    """Renew the pick's heartbeat while the supervisor is asked (loading its model may take
    minutes), so that it goes stale only when this process is gone."""
    finished = threading.Event()
    me = worker_name()

    def renew() -> None:
        try:
            while not finished.wait(heartbeat_seconds()):
                try:
                    TurnChoice.objects.filter(pk=choice_id, status=TurnChoice.Status.CHOOSING, worker=me).update(
                        heartbeat_at=timezone.now()
                    )
                except Exception as exc:  # the database is away: the reaper decides once it is back
                    log.warning("pick %s: heartbeat failed: %s: %s", choice_id, type(exc).__name__, exc)
                    _connection_drop()
        finally:
            _connection_drop()

    thread = threading.Thread(target=renew, name=f"pick-heartbeat-{choice_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        finished.set()
        thread.join(timeout=heartbeat_seconds())


def _connection_drop() -> None:
    """Close this thread's database connection, whatever state it is in."""
    try:
        connection.close()
    except Exception as exc:
        log.debug("closing a database connection: %s", exc)


def _choice_end(choice: TurnChoice, status: str, *, answer: str = "", error: str = "") -> bool:
    """End the pick if it is still this worker's; False when it was taken (the reaper ended it)."""
    return bool(
        TurnChoice.objects.filter(pk=choice.pk, status=TurnChoice.Status.CHOOSING, worker=worker_name()).update(
            status=status, answer=answer[:200], error=error, finished_at=timezone.now()
        )
    )


def _choice_fail(choice: TurnChoice, exc: BaseException) -> None:
    """The pick failed: the round ends with a note that says why (unless the reaper already ended it)."""
    user_message = Message.objects.filter(pk=choice.user_message_id).first()
    session = Session.objects.filter(pk=user_message.session_id).first() if user_message is not None else None
    supervisor = supervised(session) if session is not None else None
    who = f"The supervisor {supervisor.name}" if supervisor is not None else "The supervisor"
    reason = str(exc) if isinstance(exc, BackendError) else f"internal error: {type(exc).__name__}: {exc}"
    hint = " Trying again may help." if isinstance(exc, BackendError) and exc.retryable else ""
    with transaction.atomic():
        if _choice_end(choice, TurnChoice.Status.FAILED, error=reason) and user_message is not None:
            note_add(user_message, f"{who} could not pick who speaks next ({reason}); the round ends.{hint}")


def _choose_claimed(choice: TurnChoice) -> str | None:
    from inference.backends.base import GenerationParams
    from inference.cache import model_cache
    from sessions_app.selectors import history_as_seen

    user_message = Message.objects.filter(pk=choice.user_message_id, role=Message.Role.USER).first()
    if user_message is None or user_message.turns.get("stopped"):
        _choice_end(choice, TurnChoice.Status.CANCELLED)
        return None
    session = Session.objects.get(pk=user_message.session_id)
    supervisor = supervised(session)
    if supervisor is None:
        with transaction.atomic():
            if _choice_end(choice, TurnChoice.Status.FAILED, error="No supervisor."):
                note_add(user_message, "This session no longer has a supervisor; the round ends.")
        return None
    if not _chain_may_grow(user_message):
        _choice_end(choice, TurnChoice.Status.DONE)
        return None  # at the cap, or a turn is running or did not complete (a repeated pick)
    candidates = [a for a in participants_of(session) if a.is_active and a.pk != supervisor.pk]
    roster = "\n".join(f"- {a.name} [{a.slug}]" for a in candidates)
    # What the supervisor has seen: the conversation up to now, every agent's turn by name.
    history = history_as_seen(session_id=session.pk, before=None, agent_id=supervisor.pk)
    system = (supervisor.system_prompt + "\n\n" if supervisor.system_prompt else "") + SUPERVISOR_INSTRUCTION.format(
        roster=roster
    )
    plan = supervisor.load_plan()
    with model_cache().use(plan.key, plan.build) as backend:
        params = GenerationParams(max_tokens=8, temperature=0.0, top_p=1.0, repetition_penalty=1.0, stop=("\n",))
        chunks = backend.stream_chat(
            [{"role": "system", "content": system}, *history], params, should_stop=lambda: False, session_key=None
        )
        answer = "".join(chunk.text for chunk in chunks)
    picked = choice_parse(answer, [a.slug for a in candidates])
    with transaction.atomic():
        locked = Message.objects.select_for_update().filter(pk=user_message.pk).first()
        if locked is None or locked.turns.get("stopped"):  # deleted (an edit) or stopped meanwhile
            _choice_end(choice, TurnChoice.Status.CANCELLED, answer=answer)
            return None
        user_message = locked
        if not _chain_may_grow(user_message):
            _choice_end(choice, TurnChoice.Status.DONE, answer=answer)
            return None
        if not _choice_end(choice, TurnChoice.Status.DONE, answer=answer):
            return None  # taken from this worker (reaped): the reaper's note ended the round
        if picked is None:
            note_add(
                user_message,
                f"The supervisor {supervisor.name} answered {answer.strip()[:80]!r}, which names no participant; "
                "the round ends.",
            )
            return None
        if picked == END:
            if not Message.objects.filter(reply_to=user_message, role=Message.Role.ASSISTANT).exists():
                note_add(user_message, f"The supervisor {supervisor.name} ended the round before any agent answered.")
            return END
        from sessions_app.services import reply_create_turn

        agent = next(a for a in candidates if a.slug == picked)
        done = Message.objects.filter(reply_to=user_message, role=Message.Role.ASSISTANT).count()
        reply_create_turn(session, user_message, agent, turn=done + 1)
    return picked


def _chain_may_grow(user_message: Message) -> bool:
    """Under a supervisor: every turn so far is complete and the cap is not reached."""
    chain = list(
        Message.objects.filter(reply_to=user_message, role=Message.Role.ASSISTANT).values_list("status", flat=True)
    )
    limit = min(int(user_message.turns.get("max_turns") or 0), max_turns())
    return len(chain) < limit and all(status == Message.Status.COMPLETE for status in chain)
