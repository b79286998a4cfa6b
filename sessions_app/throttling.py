"""DRF's rate limits, open when their counters cannot be read.

The counters live in Redis (the cache) when the platform runs distributed. While Redis is away a
limit cannot be checked; refusing every request for that would turn a broker outage into an API
outage, reads of stored chats included. So the request goes through and the miss is logged.
"""

from __future__ import annotations

import logging
from typing import Any

from rest_framework.throttling import AnonRateThrottle, UserRateThrottle

from sessions_app.unavailable import BROKER_ERRORS

log = logging.getLogger(__name__)


class _FailOpen:
    def allow_request(self, request: Any, view: Any) -> bool:
        try:
            return bool(super().allow_request(request, view))  # type: ignore[misc]
        except BROKER_ERRORS as exc:
            log.warning("rate limit not checked, Redis unavailable: %s: %s", type(exc).__name__, exc)
            return True


class UserThrottle(_FailOpen, UserRateThrottle):
    pass


class AnonThrottle(_FailOpen, AnonRateThrottle):
    pass
