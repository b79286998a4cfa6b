"""Replies whose worker died: found by their lapsed heartbeat and ended ``interrupted``.

A live worker renews its replies' heartbeat every few seconds (``sessions_app.liveness``), so a
reply whose ``heartbeat_at`` is older than ``REPLY_STALE_SECONDS`` has lost its process. Its text
is the fresher of the database's copy and the live buffer's.

A supervisor's pick of the next speaker (``TurnChoice``) holds the same kind of lease; one whose
worker died is ended ``interrupted`` and its round ends with a visible note.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from sessions_app import broadcast, turns
from sessions_app.live import text_fresher
from sessions_app.models import Message, TurnChoice
from sessions_app.selectors import message_payload

log = logging.getLogger(__name__)

_LOADED_AT = time.time()
INTERRUPTED_ERROR = "The worker generating this reply stopped before it finished."


def replies_reap(*, stale_seconds: float | None = None) -> int:
    """Mark ``interrupted`` the replies (and supervisors' picks) whose heartbeat is older than
    ``stale_seconds``. Returns how many were ended."""
    stale = stale_seconds if stale_seconds is not None else settings.REPLY_STALE_SECONDS
    cutoff = timezone.now() - timedelta(seconds=stale)
    reaped = _interrupt(Message.objects.filter(status=Message.Status.STREAMING, heartbeat_at__lte=cutoff))
    return reaped + _choices_interrupt(
        TurnChoice.objects.filter(status=TurnChoice.Status.CHOOSING, heartbeat_at__lte=cutoff)
    )


def replies_reap_before(*, moment: datetime) -> int:
    """Mark ``interrupted`` the replies whose last heartbeat came before ``moment``.

    The embedded default calls it with its own process's start, one heartbeat period after it:
    a reply still `streaming` whose heartbeat stopped before this process existed belonged to a
    process that is gone, while a live one (a terminal chat beside the server) has renewed its
    heartbeat since.
    """
    reaped = _interrupt(Message.objects.filter(status=Message.Status.STREAMING, heartbeat_at__lt=moment))
    return reaped + _choices_interrupt(
        TurnChoice.objects.filter(status=TurnChoice.Status.CHOOSING, heartbeat_at__lt=moment)
    )


def _interrupt(candidates: QuerySet[Message]) -> int:
    reaped = 0
    for message in candidates.select_related("agent"):
        content, seq = text_fresher(message_id=message.pk, content=message.content, seq=message.seq)
        # Conditional on the heartbeat read above: a worker that renewed it meanwhile is alive.
        updated = Message.objects.filter(
            pk=message.pk, status=Message.Status.STREAMING, heartbeat_at=message.heartbeat_at
        ).update(
            status=Message.Status.INTERRUPTED,
            content=content,
            seq=seq,
            error=INTERRUPTED_ERROR,
            finished_at=timezone.now(),
        )
        if updated:
            reaped += 1
            message.refresh_from_db()
            log.warning("reply %s interrupted: its worker %s stopped renewing it", message.pk, message.worker)
            try:
                broadcast.done_send(message.session_id, message_payload(message))
            except Exception as exc:
                log.warning("announcing interrupted reply %s failed: %s", message.pk, exc)
    broadcast.flush()
    return reaped


def _choices_interrupt(candidates: QuerySet[TurnChoice]) -> int:
    """End the picks whose worker died, each with a note in its session: the round is over."""
    reaped = 0
    for choice in candidates.select_related("user_message"):
        with transaction.atomic():
            # Conditional on the heartbeat read above: a worker that renewed it meanwhile is alive.
            updated = TurnChoice.objects.filter(
                pk=choice.pk, status=TurnChoice.Status.CHOOSING, heartbeat_at=choice.heartbeat_at
            ).update(status=TurnChoice.Status.INTERRUPTED, error=turns.INTERRUPTED_NOTE, finished_at=timezone.now())
            if updated:
                reaped += 1
                log.warning("pick %s interrupted: its worker %s stopped renewing it", choice.pk, choice.worker)
                turns.note_add(choice.user_message, turns.INTERRUPTED_NOTE)
    broadcast.flush()
    return reaped


def process_started_at() -> datetime:
    """When this operating-system process started (not when some module was imported)."""
    try:
        with open("/proc/self/stat") as f:
            # Field 22, counted after the parenthesised command name, which may hold spaces.
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime "))
        started = boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        started = _LOADED_AT  # no /proc (not Linux): this module loads as the process starts
    return datetime.fromtimestamp(started, tz=UTC)
