"""The first-token trace: with ``FIRST_TOKEN_TRACE=1`` every hop of a reply's way from the request
to its first byte logs its wall-clock time, ``first-token reply=12 hop=claimed t=1796284493.123456``.

The door (daphne) and the worker (Celery) write to their own logs; ``python -m
tools.profile_first_token`` starts the platform with the trace on, sends requests, reads both logs
and prints the median time between hops. Off (the default), a mark costs one settings lookup.

Hops, in order: ``request`` (the door got the call), ``stored`` (caller, limits and body checked,
session and messages committed, the reply queued; then the door joins the session's group),
``task`` (a worker process started the task), ``claimed`` (its row is ours), ``prompt`` (model
ready, prompt built: generation starts), ``engine_first`` (the engine's first token),
``sent`` (the first delta handed to the channel layer), ``door_event`` (the door received it),
``first_byte`` (the door handed the first text to the server to write).

With the trace on, each process also logs every garbage collection that paused it for more than
5 ms (``gc pause generation=2 ms=…``, ``inference.runtime.heap``).
"""

from __future__ import annotations

import logging
import time

from django.conf import settings

log = logging.getLogger("chatsite.trace")


def mark(reply_id: int, hop: str, at: float | None = None) -> None:
    if settings.FIRST_TOKEN_TRACE:
        log.warning("first-token reply=%s hop=%s t=%.6f", reply_id, hop, time.time() if at is None else at)
