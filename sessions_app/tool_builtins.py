"""The built-in tools that read the platform: ``search_chats``, and the spec of ``ask_agent``.

``search_chats`` searches the messages of the asking user's own sessions, and no one else's: the
query starts from ``Session.owner``, so another user's chats cannot match whatever the words. On
PostgreSQL it is full-text search (``websearch`` syntax: words, "quoted phrases", ``-word``,
``or``), ranked; on SQLite, the embedded default, every word of the query must appear in the
message, case-insensitively (ASCII letters only, as SQLite's LIKE), newest first. A reply still
being written (the one asking, among them) is not searched.

``ask_agent`` is only described here (``ASK_AGENT``, the schema its arguments are checked
against): it runs in ``sessions_app.consult``, which also tells each reply's model the agents it
may consult (the ``agent`` argument's enum).

``builtin_specs()`` lists the four built-ins as a model is told of them, in ``BUILTIN_NAMES`` order.
"""

from __future__ import annotations

import re
from typing import Any

from django.contrib.postgres.search import SearchQuery, SearchRank, SearchVector
from django.db import connection
from django.db.models import F, QuerySet

from inference.tools.base import BUILTIN_NAMES, ToolError, ToolSpec, cap_result
from inference.tools.builtin import BUILTINS, arguments_check
from sessions_app.models import Message

# PostgreSQL's text-search configuration: "simple" matches words as written, in any language
# (no stemming, no stop words), as the SQLite search does.
SEARCH_CONFIG = "simple"
DEFAULT_LIMIT = 5
MAX_LIMIT = 20
SNIPPET = 200

SEARCH_CHATS = ToolSpec(
    name="search_chats",
    description=(
        "Searches the messages of the user's earlier chats and returns the best matches, each with "
        "its chat's title, who wrote it, the date and the text around the match. Use it when the "
        "user refers to something said in another chat."
    ),
    input_schema={
        "type": "object",
        "properties": {
            "query": {
                "type": "string",
                "minLength": 1,
                "maxLength": 200,
                "description": 'Words to look for, e.g. budget spreadsheet. "quoted words" match a phrase.',
            },
            "limit": {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_LIMIT,
                "default": DEFAULT_LIMIT,
                "description": f"How many messages to return at most (default {DEFAULT_LIMIT}).",
            },
        },
        "required": ["query"],
        "additionalProperties": False,
    },
)

ASK_AGENT = ToolSpec(
    name="ask_agent",
    description=(
        "Asks another agent a question and returns its answer. Use it when another agent knows the "
        "subject better; the question must make sense on its own, as that agent sees nothing else."
    ),
    input_schema={
        "type": "object",
        "properties": {
            "agent": {
                "type": "string",
                "pattern": "^[-a-zA-Z0-9_]+$",
                "maxLength": 100,
                "description": "The slug of the agent to ask, e.g. sql-expert.",
            },
            "question": {
                "type": "string",
                "minLength": 1,
                # llama.cpp's grammar parser refuses a repetition past 2,000 (maxLength 4000 made
                # every reply with the tool fail before its first token).
                "maxLength": 1000,
                "description": "The full question for that agent.",
            },
        },
        "required": ["agent", "question"],
        "additionalProperties": False,
    },
)


def builtin_specs() -> list[ToolSpec]:
    """The four built-in tools' specs, in ``BUILTIN_NAMES`` order."""
    specs = {**BUILTINS, SEARCH_CHATS.name: SEARCH_CHATS, ASK_AGENT.name: ASK_AGENT}
    return [specs[name] for name in BUILTIN_NAMES]


def _words(query: str) -> list[str]:
    return re.findall(r"\w+", query)


def _matches(user: Any, query: str, words: list[str], limit: int) -> list[Message]:
    unfinished = (Message.Status.QUEUED, Message.Status.STREAMING)
    qs: QuerySet[Message] = (
        Message.objects.filter(session__owner=user)
        .exclude(content="")
        .exclude(status__in=unfinished)
        .select_related("session", "agent")
    )
    if connection.vendor == "postgresql":
        search = SearchQuery(query, search_type="websearch", config=SEARCH_CONFIG)
        vector = SearchVector("content", config=SEARCH_CONFIG)
        ranked = qs.annotate(document=vector, rank=SearchRank(vector, search)).filter(document=search)
        return list(ranked.order_by(F("rank").desc(), "-created_at", "-pk")[:limit])
    for word in words:
        qs = qs.filter(content__icontains=word)
    return list(qs.order_by("-created_at", "-pk")[:limit])


def _snippet(content: str, words: list[str]) -> str:
    """About SNIPPET characters of ``content`` around the first of ``words`` found, on one line."""
    text = " ".join(content.split())
    lowered = text.lower()
    found = [at for at in (lowered.find(word.lower()) for word in words) if at >= 0]
    at = min(found) if found else 0
    start = max(0, at - SNIPPET // 3)
    end = min(len(text), start + SNIPPET)
    start = max(0, end - SNIPPET)
    return ("…" if start else "") + text[start:end] + ("…" if end < len(text) else "")


def _line(message: Message, words: list[str]) -> str:
    who = message.role
    if message.agent is not None:
        who = f"{message.role} ({message.agent.name})"
    title = message.session.title or f"Session {message.session_id}"
    when = message.created_at.strftime("%Y-%m-%d %H:%M UTC")
    return f'- "{title}" (session {message.session_id}) · {who} · {when}: {_snippet(message.content, words)}'


def search_chats(user: Any, arguments: Any) -> str:
    """The messages of ``user``'s own sessions that match ``arguments["query"]``, as text, one per
    line (best first on PostgreSQL, newest first on SQLite), at most ``arguments["limit"]``."""
    arguments = arguments_check(SEARCH_CHATS, arguments)
    if not getattr(user, "is_authenticated", False):
        raise ToolError("search_chats: only a signed-in user's chats can be searched")
    query = arguments["query"].strip()
    words = _words(query)
    if not words:
        raise ToolError("search_chats: the query has no words to look for")
    limit = int(arguments.get("limit", DEFAULT_LIMIT))
    hits = _matches(user, query, words, limit)
    if not hits:
        return f'No message of yours matches "{query}".'
    heading = "1 message of yours matches" if len(hits) == 1 else f"{len(hits)} messages of yours match"
    lines = [f'{heading} "{query}":']
    lines.extend(_line(message, words) for message in hits)
    return cap_result("\n".join(lines))
