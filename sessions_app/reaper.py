"""Replies whose worker died: found by their lapsed heartbeat and ended ``interrupted``
(``inference.runtime.reaper``).

A live worker renews its replies' heartbeat every few seconds (``sessions_app.liveness``), so a
reply whose ``heartbeat_at`` is older than ``REPLY_STALE_SECONDS`` has lost its process. Its text
is the fresher of the database's copy and the live buffer's, and its session is told after commit.

A supervisor's pick of the next speaker (``TurnChoice``) holds the same kind of lease; one whose
worker died is ended ``interrupted`` and its round ends with a visible note.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any, Literal

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from inference.runtime.identity import process_started_at
from inference.runtime.reaper import reap
from sessions_app import broadcast, notes
from sessions_app.live import live_fresher
from sessions_app.liveness import PICKS, REPLIES
from sessions_app.models import Message, TurnChoice
from sessions_app.selectors import message_payload

log = logging.getLogger(__name__)

__all__ = ["INTERRUPTED_ERROR", "process_started_at", "replies_reap", "replies_reap_before"]

INTERRUPTED_ERROR = "The worker generating this reply stopped before it finished."


def replies_reap(*, stale_seconds: float | None = None) -> int:
    """Mark ``interrupted`` the replies (and supervisors' picks) whose heartbeat is older than
    ``stale_seconds``. Returns how many were ended."""
    stale = stale_seconds if stale_seconds is not None else settings.REPLY_STALE_SECONDS
    return _reap(before=timezone.now() - timedelta(seconds=stale), lookup="lte")


def replies_reap_before(*, moment: datetime) -> int:
    """Mark ``interrupted`` the replies whose last heartbeat came before ``moment``.

    The embedded default calls it with its own process's start, one heartbeat period after it:
    a reply still `streaming` whose heartbeat stopped before this process existed belonged to a
    process that is gone, while a live one (a terminal chat beside the server) has renewed its
    heartbeat since.
    """
    return _reap(before=moment, lookup="lt")


def _reap(*, before: datetime, lookup: Literal["lt", "lte"]) -> int:
    return reap(
        REPLIES, before=before, lookup=lookup, values=_reply_ended, aftermath=_reply_announce,
        rows=Message.objects.select_related("agent"),
    ) + reap(
        PICKS, before=before, lookup=lookup, values=_pick_ended, aftermath=_pick_note,
        rows=TurnChoice.objects.select_related("user_message"),
    )  # fmt: skip


def _reply_ended(message: Message) -> dict[str, Any]:
    live = live_fresher(message_id=message.pk, content=message.content, seq=message.seq, reasoning=message.reasoning)
    # A tool call the worker was running when it died never ended: it did not finish, stopped.
    calls = [
        {**call, "status": "cancelled", "error": call.get("error") or "The worker stopped during this call."}
        if isinstance(call, dict) and call.get("status") == "running" else call
        for call in message.tool_calls or []
    ]  # fmt: skip
    return {"status": Message.Status.INTERRUPTED, "content": live.content, "reasoning": live.reasoning,
            "seq": live.seq, "error": INTERRUPTED_ERROR, "finished_at": timezone.now(),
            "tool_calls": calls}  # fmt: skip


def _reply_announce(message: Message) -> None:
    def send() -> None:
        try:
            broadcast.done_send(message.session_id, message_payload(message))
        except Exception as exc:
            log.warning("announcing interrupted reply %s failed: %s", message.pk, exc)

    transaction.on_commit(send)


def _pick_ended(choice: TurnChoice) -> dict[str, Any]:
    return {"status": TurnChoice.Status.INTERRUPTED, "error": notes.INTERRUPTED_NOTE, "finished_at": timezone.now()}


def _pick_note(choice: TurnChoice) -> None:
    """The round is over: a note in its session says why (written with the end of the pick)."""
    notes.note_add(choice.user_message, notes.INTERRUPTED_NOTE)
