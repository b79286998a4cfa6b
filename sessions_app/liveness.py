"""Liveness of replies and supervisors' picks: the reply and pick tables as the task runtime
holds them (``inference.runtime.leases``).

A reply being generated is held by a *lease* in the process that claimed it; the process's one
heartbeat thread renews it every ``heartbeat_seconds()`` from the claim to the end, whatever the
generating thread is doing. So ``heartbeat_at`` goes stale only when the process is gone (or
cannot reach the database), and the reaper (``sessions_app.reaper``) takes only replies whose
worker died. A reply taken away (reaped, deleted by an edit, finished by someone else) has its
lease marked lost, and the generating thread stops at once and sends nothing more.
"""

from __future__ import annotations

from django.conf import settings

from inference.runtime.identity import worker_name
from inference.runtime.leases import Lease, Leased, claim, heartbeat
from sessions_app.models import Message, TurnChoice

__all__ = ["PICKS", "REPLIES", "Lease", "claim", "heartbeat", "heartbeat_seconds", "worker_name"]


def heartbeat_seconds() -> float:
    """How often leases are renewed: often enough that three renewals fit in the stale limit."""
    return float(min(settings.REPLY_HEARTBEAT_SECONDS, max(0.2, settings.REPLY_STALE_SECONDS / 3)))


REPLIES = Leased("reply", Message, Message.Status.STREAMING, period=heartbeat_seconds)
PICKS = Leased("pick", TurnChoice, TurnChoice.Status.CHOOSING, period=heartbeat_seconds)
