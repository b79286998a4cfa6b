"""Text that no door may pass on: a NUL character or a lone surrogate, anywhere in a request.

PostgreSQL refuses both (a NUL in text or jsonb, a surrogate when psycopg encodes the string as
UTF-8), so without this check they surface as a server error deep in a service, after part of
the work is done. JSON lets a client write either as an escape (``"\\u0000"``, ``"\\ud800"``),
and Python's ``json`` decodes them into the ``str`` as they are. So every parsed body is walked
once, at the door: the REST API's parsers (the default parsers in ``REST_FRAMEWORK``), the
websocket consumer and ``/v1`` call ``text_problem`` and refuse the request naming the place,
e.g. ``messages[0].content: contains a NUL character``. The URL (``%00`` in its path or query) is
checked by ``url_text_middleware``, before any view looks anything up with it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from asgiref.sync import iscoroutinefunction
from django.http import HttpRequest, HttpResponse, JsonResponse, QueryDict
from django.utils.decorators import sync_and_async_middleware
from rest_framework import exceptions, parsers

from sessions_app.openai.errors import CompletionError, error_response

# After json.loads a valid surrogate pair is one astral character, so any code point left in
# U+D800..U+DFFF stood alone.
_BAD_TEXT = re.compile("[\x00\ud800-\udfff]")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclass(frozen=True)
class TextProblem:
    """Where the bad text is (``""``: the document itself) and what is wrong with it."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message[:1].upper() + self.message[1:]


def string_problem(text: str) -> str | None:
    """What is wrong with ``text`` for storage, or None."""
    found = _BAD_TEXT.search(text)
    if found is None:
        return None
    if found.group() == "\x00":
        return "contains a NUL character (\\u0000), which cannot be stored"
    return f"contains a lone surrogate (\\u{ord(found.group()):04x}), which is not valid Unicode"


def _join(path: str, key: str | int) -> str:
    """``messages[0].content``; a key that is not a plain name as ``["its JSON"]``."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    if _NAME.match(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key)}]"


def text_problem(document: Any) -> TextProblem | None:
    """The first string (value or key) in a parsed JSON document that may not be stored.

    Iterative rather than recursive: a document nested as deep as ``json.loads`` allows must not
    exhaust the stack here.
    """
    stack: list[tuple[str, Any]] = [("", document)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            problem = string_problem(value)
            if problem:
                return TextProblem(path, problem)
        elif isinstance(value, Mapping):
            children = []
            for key, child in value.items():
                if isinstance(key, str) and (problem := string_problem(key)):
                    # The key named by its JSON escape: ["a\u0000b"].
                    return TextProblem(_join(path, key), f"the key {problem}")
                children.append((_join(path, str(key)), child))
            stack.extend(reversed(children))  # reported in document order
        elif isinstance(value, (list, tuple)):
            stack.extend(reversed([(_join(path, i), child) for i, child in enumerate(value)]))
    return None


def json_loads(raw: str | bytes) -> Any:
    """``json.loads`` that fails with ValueError only: a document nested deeper than Python's
    recursion limit raises RecursionError, which would otherwise escape as a server error."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise ValueError("The JSON document is nested too deeply.") from None


def _refuse(problem: TextProblem) -> exceptions.ValidationError:
    return exceptions.ValidationError({problem.path or "non_field_errors": [problem.message]})


def _check_form(data: QueryDict) -> None:
    for key, values in data.lists():
        if problem := string_problem(key):
            raise _refuse(TextProblem(_join("", key), f"the field name {problem}"))
        for value in values:
            if isinstance(value, str) and (problem := string_problem(value)):
                raise _refuse(TextProblem(_join("", key), problem))


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, refusing text that may not be stored (400 naming the place)."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError("JSON parse error - the document is nested too deeply.") from None
        if problem := text_problem(data):
            raise _refuse(problem)
        return data


class FormParser(parsers.FormParser):
    """DRF's form parser with the same check (``%00`` decodes to a NUL)."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        data = super().parse(stream, media_type, parser_context)
        _check_form(data)
        return data


class MultiPartParser(parsers.MultiPartParser):
    """DRF's multipart parser with the same check on the form fields (files are bytes)."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        parsed = super().parse(stream, media_type, parser_context)
        _check_form(parsed.data)
        return parsed


def url_problem(request: HttpRequest) -> TextProblem | None:
    """A NUL in the URL's path or its query (``%00``). Django decodes both leniently (an invalid
    UTF-8 sequence becomes U+FFFD), so no lone surrogate reaches here."""
    if problem := string_problem(request.path_info):
        return TextProblem("", f"the URL's path {problem}")
    for key, values in request.GET.lists():
        if problem := string_problem(key):
            return TextProblem(_join("", key), f"the query parameter's name {problem}")
        for value in values:
            if problem := string_problem(value):
                return TextProblem(_join("", key), problem)
    return None


def _url_refusal(request: HttpRequest) -> HttpResponse | None:
    problem = url_problem(request)
    if problem is None:
        return None
    if request.path_info.startswith("/v1/"):
        # OpenAI's error object, as every other answer of that door.
        return error_response(CompletionError(f"{problem}.", code="invalid_value", param=problem.path or None))
    body = {
        "code": "invalid",
        "message": str(problem),
        "errors": {problem.path or "non_field_errors": [problem.message]},
    }
    return JsonResponse(body, status=400)


@sync_and_async_middleware
def url_text_middleware(get_response: Any) -> Any:
    """400 for a NUL in the URL (``/api/agents/a%00b/``, ``?search=%00``): a lookup with it would
    fail in PostgreSQL as a server error. Both sync and async, so async views stay on the loop."""
    if iscoroutinefunction(get_response):

        async def async_middleware(request: HttpRequest) -> HttpResponse:
            return _url_refusal(request) or await get_response(request)

        return async_middleware

    def middleware(request: HttpRequest) -> HttpResponse:
        return _url_refusal(request) or get_response(request)

    return middleware
