"""The start-up heap left out of the garbage collector's full collections.

A full (generation 2) collection walks every object the process holds; in daphne that is Django,
DRF, Channels and every view, and it paused the process for 64–124 ms at a time, which a request
caught in it added to its first token (issue 25: the tail of ``tools.profile_first_token``, with
``FIRST_TOKEN_TRACE=1`` logging each pause). What exists once the process has started is kept for
its lifetime anyway: ``gc.freeze()`` moves it out of the collections (as CPython's documentation
advises for a server after start-up), so they walk only what came later. A worker freezes again
once its models are loaded (``agents.preload``).

Nothing here imports an app: the Celery app's module imports it before Django is set up.
"""

from __future__ import annotations

import gc
import logging
import time
from typing import Any

from django.conf import settings
from django.urls import get_resolver

log = logging.getLogger(__name__)
trace_log = logging.getLogger("chatsite.trace")  # with the first-token trace's marks

_pause_started: list[float] = []


def _pause_watch(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _pause_started[:] = [time.perf_counter()]
    elif _pause_started:
        paused = (time.perf_counter() - _pause_started[0]) * 1000
        if paused > 5.0:
            trace_log.warning("gc pause generation=%s ms=%.1f t=%.6f", info["generation"], paused, time.time())


def heap_freeze(what: str, *, views: bool = True) -> None:
    """Import every view (Django's URL conf) unless ``views`` is False, collect once, freeze what is
    left. With ``FIRST_TOKEN_TRACE`` on, from now on each collection that pauses this process for
    more than 5 ms is logged (such a pause holds a request or a reply's tokens with it)."""
    if settings.FIRST_TOKEN_TRACE and _pause_watch not in gc.callbacks:
        gc.callbacks.append(_pause_watch)
    started = time.perf_counter()
    if views:
        get_resolver().url_patterns  # noqa: B018  # imports the views and what they import
    gc.collect()
    gc.freeze()
    log.info("%s: %d objects kept out of the garbage collector (%.0f ms)", what, gc.get_freeze_count(),
             (time.perf_counter() - started) * 1000)  # fmt: skip
