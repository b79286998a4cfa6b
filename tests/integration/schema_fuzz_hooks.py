"""Schemathesis hooks for ``test_schema_fuzz``: loaded by the ``schemathesis`` CLI through
``SCHEMATHESIS_HOOKS``, configured through the environment by the test.

``FUZZ_FORBIDDEN`` (JSON) describes the other user's (bob's) things: ``texts`` that no response may
contain, and the ids of his ``sessions``, ``messages`` and ``tokens``. ``FUZZ_AS`` is ``alice``
(signed in) or ``nobody`` (no credentials).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from typing import Any

import hypothesis.strategies as st
import schemathesis

FORBIDDEN: dict[str, Any] = json.loads(os.environ.get("FUZZ_FORBIDDEN", "{}"))
FUZZ_AS = os.environ.get("FUZZ_AS", "alice")
# The path parameter naming each of bob's kinds of things.
OWN_PARAMS = {"session_id": "sessions", "message_id": "messages", "token_id": "tokens"}
# Operations open to everyone: signing in.
PUBLIC_PATHS = {"/api/auth/token/"}


NUL = "\x00"


def _with_nul(value: Any) -> Any:
    """``value`` with a NUL added to each of its strings: PostgreSQL refuses a NUL in text, so a
    door that lets one through to a query or a write answers 500. Generated strings seldom hold
    one in a bounded number of examples, so a third of them get one on purpose."""
    if isinstance(value, str):
        return value + NUL
    if isinstance(value, dict):
        return {key: _with_nul(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_with_nul(item) for item in value]
    return value


def _variants(value: Any, *more: Any) -> Any:
    unique = [value]
    for other in (_with_nul(value), *more):
        if other not in unique:
            unique.append(other)
    return st.sampled_from(unique)


@schemathesis.hook
def flatmap_body(ctx: Any, body: Any) -> Any:
    return _variants(body)


@schemathesis.hook
def flatmap_query(ctx: Any, query: Any) -> Any:
    return _variants(query)


@schemathesis.hook
def flatmap_path_parameters(ctx: Any, path_parameters: dict[str, Any] | None) -> Any:
    """As generated, with a NUL in its text values, or with bob's ids in place of the generated
    ones: every operation on one of his things is tried, not only those the numbers happen to hit."""
    if not path_parameters or not any(name in OWN_PARAMS for name in path_parameters):
        return _variants(path_parameters)
    bobs = {name: FORBIDDEN[OWN_PARAMS[name]][0] if name in OWN_PARAMS else v for name, v in path_parameters.items()}
    return _variants(path_parameters, bobs)


def _objects(value: Any) -> Iterator[dict[str, Any]]:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _kind(obj: dict[str, Any]) -> str | None:
    """Which of bob's kinds an object of a response is, by the keys its shape has."""
    if {"title", "turn_policy"} <= obj.keys():
        return "sessions"
    if {"role", "session", "content"} <= obj.keys():
        return "messages"
    if {"prefix", "name"} <= obj.keys() and "id" in obj:
        return "tokens"
    return None


def _targets_bob(case: Any) -> bool:
    params = case.path_parameters or {}
    return any(params.get(name) in FORBIDDEN.get(kind, []) for name, kind in OWN_PARAMS.items())


@schemathesis.check
def nothing_of_bobs(ctx: Any, response: Any, case: Any) -> None:
    """No response shows bob's text, or one of his sessions, messages or tokens; an operation on
    one of his things (by its id in the path) never succeeds."""
    text = response.text or ""
    for marker in FORBIDDEN.get("texts", []):
        if marker in text:
            raise AssertionError(f"bob's text {marker!r} is in the response")
    if _targets_bob(case) and 200 <= response.status_code < 300:
        raise AssertionError(f"{case.method} on bob's {case.path_parameters} answered {response.status_code}")
    try:
        body = json.loads(text)
    except ValueError:
        return
    for obj in _objects(body):
        kind = _kind(obj)
        if kind is not None and obj.get("id") in FORBIDDEN.get(kind, []):
            raise AssertionError(f"bob's {kind[:-1]} {obj['id']} is in the response")
        if kind == "messages" and obj.get("session") in FORBIDDEN.get("sessions", []):
            raise AssertionError(f"a message of bob's session {obj['session']} is in the response")


@schemathesis.check
def refused_to_nobody(ctx: Any, response: Any, case: Any) -> None:
    """Without credentials every operation but signing in answers 401 or 403. Also allowed, as
    no view saw the request: 404 for a path the URLs do not route; 405 for a method the schema
    does not list (the /v1 views refuse it before asking who calls); 400 for a NUL in the URL
    (``url_text_middleware``); and Twisted's own empty 400 for a multipart body it cannot parse
    (daphne's HTTP server parses those first)."""
    if FUZZ_AS != "nobody" or case.operation.path in PUBLIC_PATHS:
        return
    if response.status_code in (401, 403):
        return
    if response.status_code == 405 and case.method.upper() != case.operation.method.upper():
        return
    if response.status_code == 400 and "%00" in str(response.request.url):
        return
    multipart = "multipart/form-data" in str(response.request.headers.get("Content-Type", ""))
    if response.status_code == 400 and multipart and not response.content:
        return
    if response.status_code == 404 and not _routable(case.path_parameters or {}):
        return
    raise AssertionError(f"without credentials: {response.status_code} {(response.text or '')[:200]}")


def _routable(params: dict[str, Any]) -> bool:
    """Whether the URLs route these values: ``<int:>`` takes digits, DRF's router a slug without
    ``/`` or ``.``, ``<str:>`` anything without ``/``."""
    for name, value in params.items():
        text = str(value)
        if name.endswith("_id"):
            if not (text.isascii() and text.isdigit()):
                return False
        elif not re.fullmatch(r"[^/.]+", text):
            return False
    return True
