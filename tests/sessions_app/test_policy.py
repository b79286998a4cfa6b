"""The turn policies as decisions on plain values: who answers a message, and who speaks after the
chain so far. No database and no model: ``test_turns`` runs the same policies end to end."""

from __future__ import annotations

from typing import Any

import pytest

from sessions_app.policy import CHOOSE, END, choice_parse, speakers, turn_after

ROUND_ROBIN = {"kind": "round_robin", "rounds": 2}


def test_a_round_robin_plans_every_participant_in_order_for_each_round() -> None:
    assert speakers(ROUND_ROBIN, ["poet", "critic"], "poet", "Go.") == ["poet", "critic", "poet", "critic"]


def test_a_debate_plans_two_debaters_then_the_judge() -> None:
    policy = {"kind": "debate", "rounds": 2, "judge": "judge"}
    plan = speakers(policy, ["judge", "poet", "critic"], "judge", "Go.")
    assert plan == ["poet", "critic", "poet", "critic", "judge"]


def test_manual_plans_the_mentioned_in_order_else_the_default() -> None:
    assert speakers({"kind": "manual"}, ["poet", "critic"], "poet", "@critic then @poet, not @nobody") == [
        "critic",
        "poet",
    ]
    assert speakers({"kind": "manual"}, ["poet", "critic"], "poet", "mail me at a@critic") == ["poet"]


def test_a_supervisor_plans_nobody_ahead() -> None:
    assert speakers({"kind": "supervisor", "supervisor": "judge"}, ["judge", "poet"], "judge", "Go.") == []


@pytest.mark.parametrize(
    ("plan", "completed", "next_one"),
    [
        ({"speakers": ["poet", "critic"], "policy": "round_robin"}, [True], "critic"),
        ({"speakers": ["poet", "critic"], "policy": "round_robin"}, [True, True], None),  # the plan's end
        ({"speakers": ["poet", "critic"], "policy": "round_robin"}, [False], None),  # a turn did not complete
        ({"speakers": ["poet", "critic"], "policy": "round_robin", "stopped": True}, [True], None),
        ({"speakers": ["poet", "critic"], "policy": "compare"}, [True], None),  # side by side, not in turn
        ({"speakers": [], "policy": "supervisor", "max_turns": 2}, [True], CHOOSE),
        ({"speakers": [], "policy": "supervisor", "max_turns": 2}, [True, True], None),  # the cap
    ],
)
def test_who_speaks_after_the_chain_so_far(plan: dict[str, Any], completed: list[bool], next_one: str | None) -> None:
    assert turn_after(plan, completed) == next_one


def test_the_supervisors_answer_is_read_strictly() -> None:
    assert choice_parse(" [Poet]", ["poet", "critic"]) == "poet"
    assert choice_parse("Critic.", ["poet", "critic"]) == "critic"
    assert choice_parse("end", ["poet"]) == END
    assert choice_parse("poet, then the critic", ["poet", "critic"]) is None
