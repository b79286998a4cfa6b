"""Every REST error as JSON with a machine-readable ``code`` and a ``message`` for people.

400s also carry ``errors``, the field errors, keyed by field. A refusal a service raises
(``inference.errors.PlatformError`` and its subclasses) is answered here, once for every view, with
its ``payload()`` and ``status``: views do not catch it.
"""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback

from inference.errors import PlatformError


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, PlatformError):
        set_rollback()  # as DRF does for its own errors: an atomic request stores nothing
        return Response(exc.payload(), status=exc.status)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    data = response.data
    if isinstance(exc, exceptions.ValidationError):
        errors = data if isinstance(data, dict) else {"non_field_errors": data}
        place, detail = _first_error(errors)
        response.data = {
            "code": "invalid",
            "message": f"{place}: {detail}" if place else detail,
            "errors": errors,
        }
    elif isinstance(exc, exceptions.Throttled):
        response.data = {
            "code": "rate_limited",
            "message": f"Too many requests; try again in {exc.wait:.0f} s." if exc.wait else "Too many requests.",
        }
    else:
        detail = data.get("detail", data) if isinstance(data, dict) else data
        code = getattr(detail, "code", None) or _code_for(response.status_code)
        response.data = {"code": str(code), "message": str(detail)}
    return response


def _first_error(errors: Any, place: str = "") -> tuple[str, str]:
    """The first error in DRF's nested errors, with its place: a list's member is ``agents[1]``,
    a nested field ``stats.ttft_ms``; ``non_field_errors`` is no place."""
    if isinstance(errors, dict):
        for key, value in errors.items():
            if value:
                if isinstance(key, int):
                    inner = f"{place}[{key}]"
                elif key == "non_field_errors":
                    inner = place
                else:
                    inner = f"{place}.{key}" if place else str(key)
                return _first_error(value, inner)
    elif isinstance(errors, list):
        for index, value in enumerate(errors):
            if isinstance(value, str):
                return place, value
            if value:  # a list serializer's errors: one (maybe empty) dict per member
                return _first_error(value, f"{place}[{index}]")
    return place, str(errors) if errors else "Invalid input."


def _code_for(status_code: int) -> str:
    return {
        status.HTTP_401_UNAUTHORIZED: "not_authenticated",
        status.HTTP_403_FORBIDDEN: "permission_denied",
        status.HTTP_404_NOT_FOUND: "not_found",
        status.HTTP_405_METHOD_NOT_ALLOWED: "method_not_allowed",
    }.get(status_code, "error")
