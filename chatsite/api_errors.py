"""Every REST error as JSON with a machine-readable ``code`` and a ``message`` for people.

400s also carry ``errors``, the field errors, keyed by field.
"""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    data = response.data
    if isinstance(exc, exceptions.ValidationError):
        errors = data if isinstance(data, dict) else {"non_field_errors": data}
        first = next(iter(errors.items()), ("", [""]))
        detail = first[1][0] if isinstance(first[1], list) and first[1] else first[1]
        response.data = {
            "code": "invalid",
            "message": f"{first[0]}: {detail}" if first[0] else str(detail),
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


def _code_for(status_code: int) -> str:
    return {
        status.HTTP_401_UNAUTHORIZED: "not_authenticated",
        status.HTTP_403_FORBIDDEN: "permission_denied",
        status.HTTP_404_NOT_FOUND: "not_found",
        status.HTTP_405_METHOD_NOT_ALLOWED: "method_not_allowed",
    }.get(status_code, "error")
