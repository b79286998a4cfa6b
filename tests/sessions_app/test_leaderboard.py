"""The leaderboard is computed when a pick is made or changed, and stored: reading it fits
nothing, whoever reads it and however often. Picks that land while it is computed, or picks
deleted with their session, never leave a stale table passing for current. Its queries hold no
list of pick ids, so any number of picks is rated on SQLite."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.db import connection, transaction
from rest_framework.test import APIClient

from agents.models import Agent
from sessions_app import leaderboard, services
from sessions_app.models import Message, Pick, Session
from tests.sessions_app.test_compare import SLUGS, compare, run_all
from tests.sessions_app.test_reply_lifecycle import fake_backend  # noqa: F401 - the autouse fixture
from tests.sessions_app.test_turns import make_agent

SQLITE_DEFAULT_MAX_VARIABLES = 32766  # SQLite's own default since 3.32; Debian builds it with 250,000


@pytest.fixture
def trio(gguf_artifact: Any) -> list[Agent]:
    return [make_agent(gguf_artifact, slug, slug.title()) for slug in SLUGS]


@pytest.fixture
def sid(api: APIClient, trio: list[Agent]) -> int:
    return int(api.post("/api/sessions/", {"agents": SLUGS}, format="json").json()["id"])


@pytest.fixture
def fits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every Bradley–Terry fit run from now on (one entry each)."""
    calls: list[int] = []
    fit = leaderboard.bradley_terry

    def counted(*args: Any, **kwargs: Any) -> dict[int, float]:
        calls.append(1)
        return fit(*args, **kwargs)

    monkeypatch.setattr("sessions_app.leaderboard.bradley_terry", counted)
    return calls


@pytest.fixture
def pick(api: APIClient, sid: int, django_capture_on_commit_callbacks: Any) -> Callable[[int], None]:
    """Pick a reply through the API, its transaction's commit hooks run as they run in production."""

    def do(reply_id: int) -> None:
        with django_capture_on_commit_callbacks(execute=True):
            response = api.post(f"/api/sessions/{sid}/messages/{reply_id}/pick/")
        assert response.status_code == 200, response.json()

    return do


def compared(api: APIClient, sid: int, slugs: list[str]) -> dict[str, int]:
    """Compare these agents on a new message, run the replies; their ids by agent."""
    created = compare(api, sid, slugs)
    run_all(created)
    return {m["agent"]: m["id"] for m in created[1:]}


def records(api: APIClient) -> dict[str, tuple[int, int]]:
    return {r["agent"]: (r["wins"], r["losses"]) for r in api.get("/api/leaderboard/").json()}


def test_reading_the_leaderboard_twice_fits_nothing_and_a_new_pick_shows_at_once(
    api: APIClient, other_api: APIClient, sid: int, fits: list[int], pick: Callable[[int], None]
) -> None:
    pick(compared(api, sid, ["critic", "poet"])["poet"])
    assert fits  # the pick computed the table
    fits.clear()
    first = api.get("/api/leaderboard/").json()
    assert api.get("/api/leaderboard/").json() == first
    assert other_api.get("/api/leaderboard/").json() == first  # any user: the same stored table
    assert fits == []
    assert {r["agent"]: (r["wins"], r["losses"]) for r in first} == {"poet": (1, 0), "critic": (0, 1)}
    pick(compared(api, sid, ["critic", "poet"])["critic"])
    fits.clear()
    assert records(api) == {"poet": (1, 1), "critic": (1, 1)}
    assert records(api) == {"poet": (1, 1), "critic": (1, 1)}
    assert fits == []


def test_a_changed_pick_shows_at_once(api: APIClient, sid: int, fits: list[int], pick: Callable[[int], None]) -> None:
    replies = compared(api, sid, ["critic", "poet"])
    pick(replies["poet"])
    pick(replies["critic"])  # the user changes their mind
    fits.clear()
    assert records(api) == {"critic": (1, 0), "poet": (0, 1)}
    assert fits == []


def test_a_table_left_stale_is_computed_once_by_the_next_read(api: APIClient, sid: int, fits: list[int]) -> None:
    """The computation after a pick did not run (its process died after the commit)."""
    replies = compared(api, sid, ["critic", "poet"])
    assert api.post(f"/api/sessions/{sid}/messages/{replies['poet']}/pick/").status_code == 200  # hooks not run
    assert fits == []
    assert records(api) == {"poet": (1, 0), "critic": (0, 1)}
    computed = len(fits)
    assert computed > 0
    assert records(api) == {"poet": (1, 0), "critic": (0, 1)}
    assert len(fits) == computed


@pytest.mark.parametrize("second_computed", [True, False])
def test_a_pick_landing_while_the_table_is_computed_is_never_lost(
    api: APIClient, sid: int, monkeypatch: pytest.MonkeyPatch, pick: Callable[[int], None], second_computed: bool
) -> None:
    """Two picks at once: the first pick's computation reads the picks, then the second pick
    commits (and its own computation runs to the end, or never does) before the first one stores
    its table. Whatever the order, a read shows both picks."""
    first, second = compared(api, sid, ["critic", "poet"]), compared(api, sid, ["critic", "poet"])
    compute = leaderboard.leaderboard_compute
    interleaved: list[bool] = []

    def compute_then_another_pick_lands() -> list[dict[str, Any]]:
        rows = compute()  # the first pick's computation has read the picks
        if not interleaved:
            interleaved.append(True)
            with transaction.atomic():  # the second pick, as reply_pick stores it
                winner = Message.objects.get(pk=second["critic"])
                Pick.objects.create(user_message_id=winner.reply_to_id, winner=winner)
                leaderboard.leaderboard_touch()
            if second_computed:
                leaderboard.leaderboard_refresh()
        return rows

    monkeypatch.setattr("sessions_app.leaderboard.leaderboard_compute", compute_then_another_pick_lands)
    pick(first["poet"])
    assert interleaved
    assert records(api) == {"poet": (1, 1), "critic": (1, 1)}


def test_picks_deleted_with_their_session_leave_the_leaderboard(
    api: APIClient, sid: int, pick: Callable[[int], None]
) -> None:
    pick(compared(api, sid, ["critic", "poet"])["poet"])
    assert records(api) == {"poet": (1, 0), "critic": (0, 1)}
    services.session_delete(session=Session.objects.get(pk=sid))
    assert records(api) == {}


def picks_bulk(session: Session, outcomes: list[tuple[Agent, Agent]]) -> None:
    """Store compared messages and their picks at once: (winner, loser) each."""
    asked = Message.objects.bulk_create(
        Message(session=session, role="user", content="Which?", turns={"policy": "compare"}) for _ in outcomes
    )
    replies = Message.objects.bulk_create(
        Message(session=session, role="assistant", agent=agent, reply_to=user_message, status="complete", content="…")
        for user_message, pair in zip(asked, outcomes, strict=True)
        for agent in pair
    )
    Pick.objects.bulk_create(
        Pick(user_message=user_message, winner=replies[2 * i]) for i, user_message in enumerate(asked)
    )


@pytest.fixture
def sqlite_default_limit() -> Iterator[None]:
    """This connection takes only as many parameters per statement as SQLite's default build
    (elsewhere the parameters are counted all the same)."""
    if connection.vendor != "sqlite":
        yield
        return
    connection.ensure_connection()
    raw = connection.connection
    before = raw.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, SQLITE_DEFAULT_MAX_VARIABLES)
    yield
    raw.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, before)


def test_forty_thousand_picks_are_rated_on_sqlite(api: APIClient, sid: int, trio: list[Agent], request: Any) -> None:
    poet, critic = Agent.objects.get(slug="poet"), Agent.objects.get(slug="critic")
    picks_bulk(Session.objects.get(pk=sid), [(poet, critic)] * 30_001 + [(critic, poet)] * 10_000)
    request.getfixturevalue("sqlite_default_limit")
    largest: list[int] = []

    def count_parameters(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        largest.append(len(params or ()))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(count_parameters):
        response = api.get("/api/leaderboard/")
    assert response.status_code == 200, response.json()  # before: 503, "too many SQL variables"
    rows = {r["agent"]: r for r in response.json()}
    assert max(largest) < 100  # no statement lists the picks
    assert (rows["poet"]["wins"], rows["poet"]["losses"], rows["poet"]["battles"]) == (30_001, 10_000, 40_001)
    assert (rows["critic"]["wins"], rows["critic"]["losses"]) == (10_000, 30_001)
    assert rows["poet"]["rating"] > 1000 > rows["critic"]["rating"]
    for row in rows.values():
        assert row["rating_low"] <= row["rating"] <= row["rating_high"]
        assert row["rating_high"] - row["rating_low"] < 20  # 40,000 picks: a narrow interval


def test_a_known_set_of_picks_gives_the_expected_order(api: APIClient, sid: int, trio: list[Agent]) -> None:
    poet, critic, judge = (Agent.objects.get(slug=s) for s in ("poet", "critic", "judge"))
    # The poet beats the critic 6 to 2 and the judge 5 to 1; the critic beats the judge 4 to 2.
    results = [(poet, critic)] * 6 + [(critic, poet)] * 2 + [(poet, judge)] * 5 + [(judge, poet)]
    results += [(critic, judge)] * 4 + [(judge, critic)] * 2
    picks_bulk(Session.objects.get(pk=sid), results)
    rows = api.get("/api/leaderboard/").json()
    assert [(r["agent"], r["wins"], r["losses"]) for r in rows] == [
        ("poet", 11, 3),
        ("critic", 6, 8),
        ("judge", 3, 9),
    ]
    assert rows[0]["rating"] > 1000 > rows[2]["rating"]
    assert all(r["rating_low"] <= r["rating"] <= r["rating_high"] for r in rows)  # 20 picks: an interval


def test_an_even_record_rates_exactly_average(api: APIClient, sid: int, trio: list[Agent]) -> None:
    poet, critic = Agent.objects.get(slug="poet"), Agent.objects.get(slug="critic")
    picks_bulk(Session.objects.get(pk=sid), [(poet, critic), (critic, poet)] * 3)
    rows = {r["agent"]: r for r in api.get("/api/leaderboard/").json()}
    assert rows["poet"]["rating"] == rows["critic"]["rating"] == 1000.0
    assert rows["poet"]["rating_low"] < 1000.0 < rows["poet"]["rating_high"]
