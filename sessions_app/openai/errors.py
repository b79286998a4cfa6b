"""OpenAI's error object: ``{"error": {"message", "type", "param", "code"}}``: how any refusal
(``inference.errors.PlatformError``) becomes one, once for every ``/v1`` view (``openai_door``),
and how a pydantic validation error becomes a refusal."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from django.http import JsonResponse
from django.http.response import HttpResponseBase
from pydantic import ValidationError

from inference.errors import PlatformError

# Codes the request model raises itself (as PydanticCustomError types): passed on unchanged.
OWN_CODES = frozenset({"invalid_type", "invalid_value", "unsupported_parameter"})
# Fields that are unions tagged by their "type": pydantic puts the tag in an error's location
# (response_format.json_schema.json_schema.name), which OpenAI's param leaves out.
TAGGED_UNIONS = frozenset({"response_format"})
# Pydantic's error types that mean "the wrong kind of value"; any other means "a wrong value".
TYPE_ERRORS = frozenset({"finite_number", "int_from_float", "model_attributes_type"})

P = ParamSpec("P")
R = TypeVar("R", bound=HttpResponseBase)


class CompletionError(PlatformError):
    """A request this door refuses; carries what OpenAI's error object holds (``param`` is the
    base's ``field``, ``kind`` the object's ``type``)."""

    def __init__(
        self, message: str, *, code: str, param: str | None = None, status: int = 400,
        kind: str = "invalid_request_error",
    ) -> None:  # fmt: skip
        super().__init__(message, code=code, field=param, status=status)
        self.kind = kind

    @property
    def param(self) -> str | None:
        return self.field


class RateLimited(CompletionError):
    def __init__(self, wait: float) -> None:
        super().__init__(
            f"Too many requests; try again in {wait:.0f} s.", code="rate_limit_exceeded", status=429, kind="requests"
        )
        self.wait = wait


def param_path(loc: tuple[int | str, ...]) -> str | None:
    """OpenAI's name for a place in the body: ``("messages", 0, "content")`` is
    ``messages[0].content``; the body itself is None."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    return path or None


def completion_error_from(exc: ValidationError) -> CompletionError:
    """The first thing pydantic found wrong, as OpenAI reports it: ``invalid_type`` for a value of
    the wrong kind, ``invalid_value`` for one of the right kind out of range (or missing), and the
    request model's own codes as they are."""
    error = exc.errors(include_url=False)[0]
    kind = error["type"]
    if kind in OWN_CODES:
        code = kind
    elif kind in TYPE_ERRORS or kind.endswith(("_type", "_parsing")):
        code = "invalid_type"
    else:
        code = "invalid_value"
    loc = error["loc"]
    if len(loc) > 1 and loc[0] in TAGGED_UNIONS:
        loc = (loc[0], *loc[2:])
    param = param_path(loc)
    # Pydantic's own words, but for a nested model's, which would name a class of this module.
    text = "Input should be an object" if kind == "model_type" else error["msg"]
    message = f"{param}: {text}." if param else f"{text}."
    return CompletionError(message, code=code, param=param)


def error_response(exc: PlatformError) -> JsonResponse:
    """OpenAI's error object, with the status its client maps to an exception class."""
    response = JsonResponse({"error": error_object(exc)}, status=exc.status)
    if isinstance(exc, RateLimited):
        response["Retry-After"] = str(max(1, math.ceil(exc.wait)))
    if exc.status >= 500:
        # Each try would be kept as a new session: let the caller decide.
        response["x-should-retry"] = "false"
    return response


def error_object(exc: PlatformError) -> dict[str, Any]:
    """Any refusal as OpenAI's error object; one raised by a service (not by this door) gets the
    ``type`` OpenAI gives its status."""
    if isinstance(exc, CompletionError):
        kind = exc.kind
    else:
        kind = "server_error" if exc.status >= 500 else "invalid_request_error"
    return {"message": exc.message, "type": kind, "param": exc.field, "code": exc.code}


def openai_door(view: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R | JsonResponse]]:
    """The one place an async ``/v1`` view's refusal becomes OpenAI's error object."""

    @functools.wraps(view)
    async def door(*args: P.args, **kwargs: P.kwargs) -> R | JsonResponse:
        try:
            return await view(*args, **kwargs)
        except PlatformError as exc:
            return error_response(exc)

    return door


def reply_failure(final: dict[str, Any]) -> CompletionError:
    """A reply that failed or was interrupted, as the error the caller gets instead of it."""
    return CompletionError(
        final["error"] or "The reply failed.", code=f"reply_{final['status']}", status=502, kind="server_error"
    )
