"""HTTP answers during an outage of the database or of Redis: a 503 with a clear message, in the
door's own error format (REST ``{"code", "message"}``, OpenAI's ``{"error": {...}}``, an HTML page),
never Django's 500 page. Nothing needs restarting afterwards: Django opens a fresh database
connection on the next request, and the Redis clients reconnect on their next command.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string
from django.views.defaults import server_error

from sessions_app.unavailable import UNAVAILABLE_ERRORS, unavailable_reason

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5


def unavailable_response(request: HttpRequest, exc: BaseException) -> HttpResponse:
    code, message, reason = unavailable_reason(exc)
    log.warning("%s %s answered 503: %s (%s: %s)", request.method, request.path, reason, type(exc).__name__, exc)
    response: HttpResponse
    if request.path.startswith("/v1/"):
        response = JsonResponse(
            {"error": {"message": message, "type": "service_unavailable", "param": None, "code": code}}, status=503
        )
    elif request.path.startswith("/api/") or request.path == "/healthz":
        response = JsonResponse({"code": code, "message": message}, status=503)
    else:
        # Rendered without the request: the page must not touch the database that is away.
        response = HttpResponse(render_to_string("503.html", {"message": message}), status=503)
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


class UnavailableMiddleware:
    """Turns an outage error raised by a view into a 503 (listed last in MIDDLEWARE)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, UNAVAILABLE_ERRORS):
            return unavailable_response(request, exception)
        return None


def handler500(request: HttpRequest) -> HttpResponse:
    """Errors raised outside a view (in a middleware) reach here: an outage still answers 503."""
    exc = sys.exc_info()[1]
    if exc is not None and isinstance(exc, UNAVAILABLE_ERRORS):
        return unavailable_response(request, exc)
    return server_error(request)
