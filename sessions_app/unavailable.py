"""When a service the platform depends on is away: the database (PostgreSQL) or the message
broker and channel layer (Redis).

Every door answers such an outage the same way, and never with a 500 page or a crashed socket:
HTTP gets a 503 with a message saying which service is away and that nothing was lost; a
websocket gets an ``error`` event and is closed with code 4503 (and a reason, where the server
sends one: daphne drops it),
and the web page reconnects by itself and is shown the stored state.
"""

from __future__ import annotations

from django.db import InterfaceError, OperationalError
from kombu.exceptions import OperationalError as BrokerOperationalError
from redis.exceptions import RedisError

# The HTTP status in the application's range, as 4401 / 4403 / 4404 are (daphne's autobahn lets
# an application close only with 1000 or 3000-4999, so the registry's 1013 cannot be sent).
WS_CLOSE_UNAVAILABLE = 4503


class BrokerUnavailable(Exception):
    """A reply could not be queued: the broker is away. The message is kept; the reply failed."""

    code = "broker_unavailable"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


DATABASE_ERRORS = (OperationalError, InterfaceError)
BROKER_ERRORS = (RedisError, BrokerOperationalError, ConnectionError, BrokerUnavailable)
UNAVAILABLE_ERRORS = DATABASE_ERRORS + BROKER_ERRORS

DATABASE_MESSAGE = "The database is unavailable right now; nothing you stored is lost. Try again in a moment."
BROKER_MESSAGE = (
    "The message broker (Redis) is unavailable right now, so live updates and new replies are paused; "
    "nothing you stored is lost. Try again in a moment."
)


def unavailable_reason(exc: BaseException) -> tuple[str, str, str]:
    """``(code, message for people, short close reason)`` for an outage error."""
    if isinstance(exc, BrokerUnavailable):
        return exc.code, exc.message, "message broker unavailable"
    if isinstance(exc, DATABASE_ERRORS):
        return "database_unavailable", DATABASE_MESSAGE, "database unavailable"
    return "broker_unavailable", BROKER_MESSAGE, "message broker unavailable"
