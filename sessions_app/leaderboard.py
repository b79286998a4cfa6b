"""The leaderboard: agents rated from the users' picks in compare mode.

Each pick is a set of pairwise results: the picked reply's agent beat every other agent compared
for that message. Ratings are Bradley–Terry strengths fitted to all pairwise results (Hunter's
minorization–maximization iterations), put on the Elo-like scale FastChat's Arena uses
(``1000 + 400·log10(strength)``, the mean strength 1), with a 95 % interval from bootstrap
resamples of the picks (none below ``MIN_PICKS_FOR_INTERVAL`` picks: too few to say).
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass
from typing import Any

from agents.models import Agent
from sessions_app.models import Message, Pick

BASE, SCALE = 1000.0, 400.0
BOOTSTRAP_ROUNDS = 200
MIN_PICKS_FOR_INTERVAL = 5  # resampling fewer picks than this says nothing about the spread
PRIOR = 0.1  # half a win and half a loss against a virtual average agent, so that no strength is 0 or ∞


@dataclass
class Row:
    agent: str
    name: str
    rating: float
    rating_low: float | None
    rating_high: float | None
    wins: int
    losses: int
    battles: int


def battles() -> list[list[tuple[int, int]]]:
    """For each pick, its pairwise results as (winner agent id, loser agent id)."""
    picks = Pick.objects.select_related("winner").values_list("user_message_id", "winner__agent_id")
    losers: dict[int, list[int]] = {}
    for user_message_id, agent_id in Message.objects.filter(
        reply_to_id__in=[p[0] for p in picks], role=Message.Role.ASSISTANT
    ).values_list("reply_to_id", "agent_id"):
        if agent_id is not None:
            losers.setdefault(user_message_id, []).append(agent_id)
    out = []
    for user_message_id, winner in picks:
        if winner is None:
            continue
        out.append([(winner, loser) for loser in losers.get(user_message_id, []) if loser != winner])
    return out


def bradley_terry(results: list[tuple[int, int]], players: list[int], iterations: int = 200) -> dict[int, float]:
    """Strengths by the MM algorithm; each player also plays a virtual average player (PRIOR)."""
    wins = Counter(w for w, _ in results)
    pair_games = Counter(tuple(sorted(pair)) for pair in results)
    strength = dict.fromkeys(players, 1.0)
    for _ in range(iterations):
        new = {}
        for i in players:
            denominator = sum(
                games / (strength[i] + strength[j])
                for (a, b), games in pair_games.items()
                if i in (a, b)
                for j in [(b if a == i else a)]
            ) + 2 * PRIOR / (strength[i] + 1.0)
            new[i] = (wins[i] + PRIOR) / denominator
        mean = math.exp(sum(math.log(v) for v in new.values()) / len(new)) if new else 1.0
        strength = {i: v / mean for i, v in new.items()}
    return strength


def _rating(strength: float) -> float:
    return BASE + SCALE * math.log10(strength)


def leaderboard(*, agents: list[Agent], seed: int = 0) -> list[Row]:
    """The agents in ``agents`` that took part in a pick, best first."""
    picks = battles()
    visible = {a.pk: a for a in agents}
    results = [pair for pick in picks for pair in pick]
    players = sorted({p for pair in results for p in pair})
    if not players:
        return []
    strength = bradley_terry(results, players)
    rng = random.Random(seed)
    samples: dict[int, list[float]] = {p: [] for p in players}
    for _ in range(BOOTSTRAP_ROUNDS):
        resample = [pair for pick in rng.choices(picks, k=len(picks)) for pair in pick]
        fitted = bradley_terry(resample, players, iterations=60)
        for p in players:
            samples[p].append(_rating(fitted[p]))
    wins = Counter(w for w, _ in results)
    losses = Counter(loser for _, loser in results)
    rows = []
    for p in players:
        if p not in visible:
            continue
        ordered = sorted(samples[p])
        spread = len(picks) >= MIN_PICKS_FOR_INTERVAL
        rows.append(
            Row(
                agent=visible[p].slug,
                name=visible[p].name,
                rating=round(_rating(strength[p]), 1),
                rating_low=round(ordered[int(0.025 * (len(ordered) - 1))], 1) if spread else None,
                rating_high=round(ordered[int(0.975 * (len(ordered) - 1))], 1) if spread else None,
                wins=wins[p],
                losses=losses[p],
                battles=wins[p] + losses[p],
            )
        )
    return sorted(rows, key=lambda r: -r.rating)


def preferences_for_user(*, user: Any) -> list[dict[str, Any]]:
    """The user's own picks as preference pairs for fine-tuning (DPO's shape): the conversation
    before the message, the message, the chosen reply and each rejected one."""
    from sessions_app.selectors import history_as_seen

    out = []
    for pick in Pick.objects.filter(user_message__session__owner=user).select_related(
        "user_message", "winner", "winner__agent"
    ):
        prompt = history_as_seen(
            session_id=pick.user_message.session_id, before=pick.user_message.pk, agent_id=pick.winner.agent_id
        )
        prompt.append({"role": "user", "content": pick.user_message.content})
        others = Message.objects.filter(reply_to=pick.user_message, role=Message.Role.ASSISTANT).exclude(
            pk=pick.winner_id
        )
        for other in others.select_related("agent"):
            out.append(
                {
                    "prompt": prompt,
                    "chosen": pick.winner.content,
                    "rejected": other.content,
                    "chosen_agent": pick.winner.agent.slug if pick.winner.agent else None,
                    "rejected_agent": other.agent.slug if other.agent else None,
                }
            )
    return out
