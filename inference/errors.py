"""The one shape of a refusal: a request that cannot be done, said once and mapped once per door.

A service raises a ``PlatformError`` (or one of its subclasses: ``ChatError``, ``PolicyError``,
``CompletionError``, ``JobError``, ``DatasetError``, ``OptionsError``) with a machine-readable
``code``, a ``message`` for a person, the request ``field`` at fault when there is one, and the
HTTP ``status`` it answers with. Each door turns it into its own error shape in one place:

- REST: ``chatsite.api_errors.exception_handler`` answers ``payload()``;
- ``/v1``: ``sessions_app.openai.errors.error_response`` answers OpenAI's error object;
- the session websocket: ``sessions_app.ws_errors.error_event`` sends an ``error`` event.

It lives at the bottom layer so that every app may raise it without importing a door.
"""

from __future__ import annotations

from typing import Any


class PlatformError(Exception):
    """Bad input or a request that cannot be done; nothing was changed by it.

    ``message`` reads on its own (a door may prefix it with ``field``); ``field`` is the request's
    name for the value at fault (``content``, ``params.bits``, ``turn_policy.judge``), or None.
    """

    default_code = "invalid"
    default_status = 400

    def __init__(
        self, message: str, *, code: str | None = None, field: str | None = None, status: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.field = field
        self.status = status or self.default_status

    def payload(self) -> dict[str, Any]:
        """The REST API's error body: ``{"code", "message"}``. With a ``field``, ``field`` and
        ``errors`` (``{field: [message]}``, a serializer's shape) are added, and the message names
        the field first (``"field: message"``, as DRF's field errors read) unless it already does
        (``params.top_p must be ...``)."""
        if not self.field:
            return {"code": self.code, "message": self.message}
        named = self.message.startswith((f"{self.field} ", f"{self.field}:"))
        return {
            "code": self.code,
            "message": self.message if named else f"{self.field}: {self.message}",
            "field": self.field,
            "errors": {self.field: [self.message]},
        }
