"""Who answers a user message in a session with several agents: the turn policies, as decisions.

A session holds an ordered list of participants (the first is its default agent) and a turn
policy, one of:

- ``{"kind": "manual"}``: the agents named with ``@slug`` answer, in the order named; no mention,
  the default agent.
- ``{"kind": "round_robin", "rounds": N}``: every participant answers in order, N rounds.
- ``{"kind": "debate", "rounds": N, "judge": "slug"}``: the first two participants other than the
  judge argue for N rounds (one turn each per round), then the judge gives the verdict.
- ``{"kind": "supervisor", "supervisor": "slug", "max_turns": N}``: before each turn the supervisor
  agent is asked, on its own worker, who speaks next (or ``END``); its answer must be exactly a
  participant's slug or ``END``. Anything else ends the round with a visible note, never a loop
  (``sessions_app.supervisor``).

Every policy is capped at ``MULTI_AGENT_MAX_TURNS`` replies per user message. When a user message
is sent its plan (the speakers, in order, and the policy's kind) is stored on it
(``Message.turns``); ``turn_after`` reads that plan and the chain so far and says who speaks next.

Nothing here reads or writes the database or calls a model: these are the decisions, on slugs and
plain dicts, that ``sessions_app.turns`` (the writes) and ``sessions_app.supervisor`` act on.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from django.conf import settings
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from inference.errors import PlatformError

MAX_ROUNDS = 10


class _Policy(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Manual(_Policy):
    kind: Literal["manual"]


class RoundRobin(_Policy):
    kind: Literal["round_robin"]
    rounds: int = Field(1, ge=1, le=MAX_ROUNDS, description="How many times every participant answers.")


class Debate(_Policy):
    kind: Literal["debate"]
    rounds: int = Field(2, ge=1, le=MAX_ROUNDS, description="Turns each debater takes.")
    judge: str = Field(description="Slug of the participant who gives the verdict.")


class Supervisor(_Policy):
    kind: Literal["supervisor"]
    supervisor: str = Field(description="Slug of the participant who picks each next speaker.")
    max_turns: int = Field(4, ge=1, description="Replies per user message at most (besides the picks).")


TurnPolicy = Annotated[Manual | RoundRobin | Debate | Supervisor, Field(discriminator="kind")]
_adapter: TypeAdapter[Manual | RoundRobin | Debate | Supervisor] = TypeAdapter(TurnPolicy)
KINDS = ("manual", "round_robin", "debate", "supervisor")


class PolicyError(PlatformError):
    """A turn policy that cannot work with these participants; ``field`` names what is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message, code="invalid_turn_policy", field=field)


def max_turns() -> int:
    return int(settings.MULTI_AGENT_MAX_TURNS)


def policy_validate(raw: Any, participants: list[str]) -> dict[str, Any]:
    """The policy as stored, checked against the participants' slugs (in order)."""
    try:
        policy = _adapter.validate_python(raw)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in error["loc"] if str(p) not in KINDS)
        raise PolicyError(
            f"turn_policy.{where}" if where else "turn_policy",
            f"{where or 'turn_policy'}: {error['msg']} (kinds: {', '.join(KINDS)})",
        ) from None
    if isinstance(policy, RoundRobin) and policy.rounds * max(len(participants), 1) > max_turns():
        raise PolicyError(
            "turn_policy.rounds",
            f"{policy.rounds} rounds of {len(participants)} agents is more than {max_turns()} turns per message.",
        )
    if isinstance(policy, Debate):
        if policy.judge not in participants:
            raise PolicyError("turn_policy.judge", f"The judge {policy.judge!r} is not a participant of this session.")
        if len([p for p in participants if p != policy.judge]) < 2:
            raise PolicyError("turn_policy", "A debate needs two participants besides the judge.")
        if 2 * policy.rounds + 1 > max_turns():
            raise PolicyError(
                "turn_policy.rounds", f"A debate of {policy.rounds} rounds is more than {max_turns()} turns."
            )
    if isinstance(policy, Supervisor):
        if policy.supervisor not in participants:
            raise PolicyError(
                "turn_policy.supervisor", f"The supervisor {policy.supervisor!r} is not a participant of this session."
            )
        if not [p for p in participants if p != policy.supervisor]:
            raise PolicyError("turn_policy", "A supervisor needs at least one other participant to pick.")
        if policy.max_turns > max_turns():
            raise PolicyError("turn_policy.max_turns", f"At most {max_turns()} turns per message.")
    return policy.model_dump()


_MENTION = re.compile(r"(?<![\w@])@([A-Za-z0-9][A-Za-z0-9_-]*)")


def mentions(content: str, slugs: list[str]) -> list[str]:
    """The participants named with ``@slug``, in the order first named."""
    named: list[str] = []
    for slug in _MENTION.findall(content):
        if slug in slugs and slug not in named:
            named.append(slug)
    return named


def speakers(policy: dict[str, Any], slugs: list[str], default: str, content: str) -> list[str]:
    """Who answers ``content``, in order, under ``policy`` (as stored): ``slugs`` are the active
    participants in order, ``default`` the session's default agent. Empty under a supervisor: it
    picks each speaker as the chain goes."""
    kind = policy.get("kind", "manual")
    if kind == "supervisor":
        return []
    if kind == "round_robin" and slugs:
        plan = slugs * int(policy.get("rounds", 1))
    elif kind == "debate" and policy.get("judge") in slugs:
        debaters = [s for s in slugs if s != policy["judge"]][:2]
        plan = debaters * int(policy.get("rounds", 1)) + [policy["judge"]] if len(debaters) == 2 else [default]
    else:
        plan = mentions(content, slugs) or [default]
    return [s for s in plan if s][: max_turns()]


# What ``turn_after`` answers besides a speaker's slug: ask the supervisor who speaks next.
CHOOSE = "<choose>"


def supervisor_limit(plan: dict[str, Any]) -> int:
    """Replies at most to a supervised user message whose plan is ``plan``."""
    return min(int(plan.get("max_turns") or 0), max_turns())


def turn_after(plan: dict[str, Any], completed: list[bool]) -> str | None:
    """Who speaks next to a user message whose plan is ``plan`` (``Message.turns``), given its
    chain so far (whether each reply, in order, ended ``complete``): a speaker's slug, ``CHOOSE``
    (the supervisor picks), or None: the chain ends.

    A chain ends when it was stopped, when a turn is still running or did not complete (stopped,
    failed, interrupted), at its plan's end and at the cap; compared replies run side by side, not
    in turn."""
    if plan.get("stopped") or not all(completed) or plan.get("policy") == "compare":
        return None
    index = len(completed)
    if plan.get("policy") == "supervisor":
        return CHOOSE if index < supervisor_limit(plan) else None
    planned: list[str] = list(plan.get("speakers") or [])
    if index >= len(planned) or index >= max_turns():
        return None
    return planned[index]


def chain_may_grow(plan: dict[str, Any], completed: list[bool]) -> bool:
    """Under a supervisor: every turn so far is complete and the cap is not reached."""
    return len(completed) < supervisor_limit(plan) and all(completed)


END = "END"


def choice_parse(answer: str, candidates: list[str]) -> str | None:
    """The supervisor's answer, strictly: a candidate's slug or END (case, brackets, quotes and a
    final full stop forgiven), else None."""
    word = answer.strip().strip("\"'`[]").rstrip(".").strip()
    if word.upper() == END:
        return END
    return next((slug for slug in candidates if slug.lower() == word.lower()), None)
