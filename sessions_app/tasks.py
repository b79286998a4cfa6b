"""Celery tasks: thin doors taking ids into the services of the same name."""

from __future__ import annotations

import logging

from celery import shared_task

from sessions_app import reaper, replies, supervisor, turns
from sessions_app.unavailable import DATABASE_ERRORS

log = logging.getLogger(__name__)


@shared_task(
    name="sessions_app.tasks.reply_generate",
    acks_late=True,
    # The database was away before the reply was claimed: try again later (nothing was claimed,
    # and a later run claims it only if it is still queued).
    autoretry_for=DATABASE_ERRORS,
    retry_backoff=2,
    retry_backoff_max=30,
    max_retries=20,
)
def reply_generate(*, message_id: int) -> bool:
    """Generate the reply; once it is stored, queue the next turn of its chain (in a multi-agent
    session each next turn is queued by the worker that stored the previous reply)."""
    claimed = replies.reply_generate(message_id=message_id)
    if claimed:
        try:
            turns.turn_next(reply_id=message_id)
        except Exception:  # the reply is stored; only its chain ends here
            log.exception("queueing the turn after reply %s failed; the chain ends here", message_id)
    return claimed


@shared_task(name="sessions_app.tasks.replies_reap")
def replies_reap() -> int:
    return reaper.replies_reap()


@shared_task(
    name="sessions_app.tasks.turn_choose",
    acks_late=True,
    # As for replies: the database was away before the pick was claimed, so try again later (a
    # pick claimed before the outage is ended by the reaper, with a note, once it is back).
    autoretry_for=DATABASE_ERRORS,
    retry_backoff=2,
    retry_backoff_max=30,
    max_retries=20,
)
def turn_choose(*, user_message_id: int) -> str | None:
    """The supervisor of a multi-agent session picks the next speaker (on the supervisor's queue)."""
    return supervisor.turn_choose(user_message_id=user_message_id)
