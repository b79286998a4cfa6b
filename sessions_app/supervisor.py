"""The supervisor's pick: on its own worker, ask its model who speaks next, and queue that turn.

Each pick is a ``TurnChoice`` row: created ``queued`` with the turn it picks for
(``turns.choose_enqueue``), claimed ``choosing`` by the worker that asks the supervisor (a
conditional update, so a repeated task does nothing), kept alive by a heartbeat while the model
loads and answers, and ended once. A model call that raises ends the round with a note here; a
worker that dies mid-pick stops the heartbeat, and the reaper (``sessions_app.reaper``) ends the
round with a note. Either way the user sees why nothing more comes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import transaction
from django.utils import timezone

from inference.backends.base import BackendError, GenerationParams
from inference.cache import model_cache
from inference.constraints import Choice
from sessions_app import policy
from sessions_app.liveness import PICKS, claim, heartbeat, worker_name
from sessions_app.models import Message, Session, TurnChoice
from sessions_app.notes import note_add
from sessions_app.selectors import history_as_seen
from sessions_app.turns import chain_completed, participants_of, reply_create_turn, supervised

log = logging.getLogger(__name__)

SUPERVISOR_INSTRUCTION = (
    "You run a conversation between the user and these agents:\n{roster}\n"
    "Decide who should speak next to serve the user's last request, or whether it has been answered. "
    "Reply with exactly one word: the name in brackets of the agent who speaks next, or END. "
    "Nothing else."
)


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
    if not claim(PICKS, first.pk, queued=TurnChoice.Status.QUEUED):
        return None  # another run took it between the read and the claim
    first.refresh_from_db()
    return first


@contextmanager
def _choice_lease(choice_id: int) -> Iterator[None]:
    """Held by this process's one heartbeat (``inference.runtime.leases``) while the supervisor is
    asked (loading its model may take minutes), so that it goes stale only when the process is gone."""
    lease = heartbeat().hold(PICKS, choice_id)
    try:
        yield
    finally:
        heartbeat().release(lease)


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
        # The answer is decoded under a choice of the slugs and END: it always names someone.
        choices = Choice(options=(*(a.slug for a in candidates), policy.END))
        backend.constraint_check(choices)
        params = GenerationParams(
            max_tokens=48, temperature=0.0, top_p=1.0, repetition_penalty=1.0, stop=("\n",), constraint=choices
        )
        chunks = backend.stream_chat(
            [{"role": "system", "content": system}, *history], params, should_stop=lambda: False, session_key=None
        )
        answer = "".join(chunk.text for chunk in chunks)
    picked = policy.choice_parse(answer, [a.slug for a in candidates])
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
        if picked == policy.END:
            if not Message.objects.filter(reply_to=user_message, role=Message.Role.ASSISTANT).exists():
                note_add(user_message, f"The supervisor {supervisor.name} ended the round before any agent answered.")
            return policy.END
        agent = next(a for a in candidates if a.slug == picked)
        done = Message.objects.filter(reply_to=user_message, role=Message.Role.ASSISTANT).count()
        reply_create_turn(session, user_message, agent, turn=done + 1)
    return picked


def _chain_may_grow(user_message: Message) -> bool:
    """Under a supervisor: every turn so far is complete and the cap is not reached."""
    return policy.chain_may_grow(user_message.turns, chain_completed(user_message))
