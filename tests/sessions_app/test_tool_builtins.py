"""search_chats, the built-in tool that searches a user's own chats: what the model reads back, and
that no other user's message ever reaches it. On the test database (SQLite by default) and once
on the machine's PostgreSQL, whose full-text search is ranked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from inference.constraints import json_schema_valid
from inference.tools.base import BUILTIN_NAMES, ToolError
from sessions_app.models import Message, Session
from sessions_app.tool_builtins import builtin_specs, search_chats

ROOT = Path(__file__).resolve().parents[2]
BOB_SECRET = "budget budget budget spreadsheet budget zebra"


def seed() -> dict[str, Any]:
    """alice and bob, each with chats; bob's text matches alice's queries better than hers do."""
    from agents.models import Agent

    alice = User.objects.create_user("alice")  # no password: no slow hashing
    bob = User.objects.create_user("bob")
    helper = Agent.objects.create(name="Helper", slug="helper", backend="llama_cpp")
    trip = Session.objects.create(owner=alice, title="Trip to Lyon", agent=helper)
    Message.objects.create(session=trip, role="user", content="Book the train to Lyon for the budget meeting.")
    Message.objects.create(
        session=trip,
        role="assistant",
        agent=helper,
        content="Done: the 9:04 train. Your budget for the trip is 180 euros, hotel included.",
    )
    untitled = Session.objects.create(owner=alice)
    Message.objects.create(session=untitled, role="user", content="What rhymes with orange? Nothing, they say.")
    bobs = Session.objects.create(owner=bob, title="Bob's budget spreadsheet")
    Message.objects.create(session=bobs, role="user", content=BOB_SECRET)
    return {"alice": alice, "bob": bob, "helper": helper, "trip": trip, "untitled": untitled}


@pytest.fixture
def people(db: Any) -> dict[str, Any]:
    return seed()


def test_alice_finds_her_message_by_a_word_with_its_chat_author_date_and_text(people: dict[str, Any]) -> None:
    answer = search_chats(people["alice"], {"query": "Orange"})
    lines = answer.splitlines()
    assert lines[0] == '1 message of yours matches "Orange":'
    today = timezone.now().strftime("%Y-%m-%d")
    untitled = people["untitled"].pk
    assert lines[1].startswith(f'- "Session {untitled}" (session {untitled}) · user · {today}')
    assert lines[1].endswith(": What rhymes with orange? Nothing, they say.")


def test_an_agents_reply_is_found_and_attributed(people: dict[str, Any]) -> None:
    answer = search_chats(people["alice"], {"query": "euros hotel"})
    assert answer.splitlines()[1].startswith(f'- "Trip to Lyon" (session {people["trip"].pk}) · assistant (Helper) · ')
    assert "180 euros, hotel included" in answer


def test_alice_never_sees_bobs_messages_even_when_they_match_better(people: dict[str, Any]) -> None:
    answer = search_chats(people["alice"], {"query": "budget", "limit": 20})
    assert answer.splitlines()[0] == '2 messages of yours match "budget":'
    assert "Trip to Lyon" in answer
    assert "zebra" not in answer and "Bob's" not in answer
    assert search_chats(people["alice"], {"query": "zebra"}) == 'No message of yours matches "zebra".'
    # And bob, in turn, finds his own.
    assert "zebra" in search_chats(people["bob"], {"query": "zebra"})
    assert search_chats(people["bob"], {"query": "Lyon"}) == 'No message of yours matches "Lyon".'


def test_every_word_must_match(people: dict[str, Any]) -> None:
    assert "Book the train" in search_chats(people["alice"], {"query": "train meeting"})
    assert search_chats(people["alice"], {"query": "train orange"}) == 'No message of yours matches "train orange".'


def test_the_limit_is_respected_and_defaults_to_five(people: dict[str, Any]) -> None:
    session = Session.objects.create(owner=people["alice"], title="Notes")
    for n in range(8):
        Message.objects.create(session=session, role="user", content=f"Note {n}: buy walnuts.")
    assert len(search_chats(people["alice"], {"query": "walnuts", "limit": 3}).splitlines()) == 1 + 3
    assert len(search_chats(people["alice"], {"query": "walnuts"}).splitlines()) == 1 + 5


def test_a_long_message_is_shown_around_the_match(people: dict[str, Any]) -> None:
    long = "lorem ipsum " * 150 + "the secret word is aubergine, " + "dolor sit amet " * 150
    Message.objects.create(session=people["trip"], role="user", content=long)
    line = search_chats(people["alice"], {"query": "aubergine"}).splitlines()[1]
    snippet = line.split(": ", 1)[1]
    assert "the secret word is aubergine" in snippet
    assert snippet.startswith("…") and snippet.endswith("…")
    assert len(snippet) <= 202


def test_a_reply_still_being_written_is_not_searched(people: dict[str, Any]) -> None:
    Message.objects.create(
        session=people["trip"],
        role="assistant",
        agent=people["helper"],
        content="Half a thought about kiwis",
        status=Message.Status.STREAMING,
    )
    assert search_chats(people["alice"], {"query": "kiwis"}) == 'No message of yours matches "kiwis".'


@pytest.mark.parametrize(
    ("arguments", "named"),
    [({"query": "x", "limit": 50}, "limit"), ({"limit": 2}, "query"), ({"query": "x", "from": "bob"}, "from")],
)
def test_bad_arguments_are_an_error_naming_the_field(people: dict[str, Any], arguments: Any, named: str) -> None:
    with pytest.raises(ToolError) as caught:
        search_chats(people["alice"], arguments)
    assert "invalid arguments" in str(caught.value) and named in str(caught.value)


def test_a_query_without_words_is_an_error(people: dict[str, Any]) -> None:
    with pytest.raises(ToolError, match="no words"):
        search_chats(people["alice"], {"query": "?!"})


def test_the_four_builtins_are_specified_in_order() -> None:
    specs = builtin_specs()
    assert tuple(spec.name for spec in specs) == BUILTIN_NAMES
    for spec in specs:
        assert json_schema_valid(spec.input_schema)
        assert spec.input_schema["additionalProperties"] is False
    ask = specs[3].input_schema
    assert ask["required"] == ["agent", "question"] and set(ask["properties"]) == {"agent", "question"}


# ------------------------------------------------------------------ PostgreSQL

ON_POSTGRES = """
import json, django
django.setup()
from django.db import connection
from sessions_app.models import Message
from sessions_app.tool_builtins import search_chats
from tests.sessions_app.test_tool_builtins import seed
people = seed()
alice = people["alice"]
# The denser match is the older: ranked first on PostgreSQL, where newest first would put it last.
Message.objects.create(session=people["untitled"], role="user", content="Budget, budget: the budget is tight.")
Message.objects.create(session=people["trip"], role="user", content="A long day; the budget came up once, late.")
print(json.dumps({
    "vendor": connection.vendor,
    "budget": search_chats(alice, {"query": "budget", "limit": 20}),
    "phrase": search_chats(alice, {"query": '"train to Lyon"'}),
    "not_phrase": search_chats(alice, {"query": '"Lyon to train"'}),
    "excluded": search_chats(alice, {"query": "budget -hotel -tight -once"}),
    "bob": search_chats(people["bob"], {"query": "budget"}),
}))
"""


@pytest.fixture
def postgres_database() -> Iterator[str]:
    from tests.platform_setup import database_create, database_drop

    name = f"chatsite_tools_{uuid.uuid4().hex[:8]}"
    url = database_create(name)
    try:
        yield url
    finally:
        database_drop(name)


def test_on_postgresql_the_search_is_ranked_full_text_and_still_only_yours(
    postgres_database: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(DATABASE_URL=postgres_database, CHATSITE_DATA_DIR=str(tmp_path))
    env["DJANGO_SETTINGS_MODULE"] = "chatsite.settings"
    result = subprocess.run(
        [sys.executable, "-c", ON_POSTGRES], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["vendor"] == "postgresql"
    budget = out["budget"].splitlines()
    assert budget[0] == '4 messages of yours match "budget":'
    assert "the budget is tight" in budget[1]  # three times: ranked first, though not the newest
    assert "zebra" not in out["budget"]
    assert "Book the train to Lyon" in out["phrase"]
    assert out["not_phrase"] == 'No message of yours matches ""Lyon to train"".'
    excluded = out["excluded"].splitlines()
    assert len(excluded) == 2 and "Book the train" in excluded[1]
    assert "zebra" in out["bob"] and "Lyon" not in out["bob"]
