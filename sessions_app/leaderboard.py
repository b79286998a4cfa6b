"""The leaderboard: agents rated from the users' picks in compare mode.

Each pick is a set of pairwise results: the picked reply's agent beat every other agent compared
for that message. Ratings are Bradley–Terry strengths fitted to all pairwise results (Hunter's
minorization–maximization iterations), put on the Elo-like scale FastChat's Arena uses
(``1000 + 400·log10(strength)``, the mean strength 1), with a 95 % interval from bootstrap
resamples of the picks (none below ``MIN_PICKS_FOR_INTERVAL`` picks: too few to say).

The table is computed when a pick is made or changed (``leaderboard_touch`` in the pick's
transaction, ``leaderboard_refresh`` once it has committed) and stored (``LeaderboardTable``);
a read only formats it. A read that finds it stale (a pick landed during the computation, picks
were deleted with their session, a computation failed) computes it once more first.

The cost does not grow with the number of picks beyond one query: picks are grouped by their
outcome (who beat whom), and a bootstrap resample is a multinomial draw over those outcomes,
which is what drawing as many picks with replacement gives.
"""

from __future__ import annotations

import logging
import math
import random
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

from django.db.models import F
from django.utils import timezone

from agents.models import Agent
from sessions_app.models import LeaderboardTable, Message, Pick
from sessions_app.selectors import history_as_seen

log = logging.getLogger(__name__)

BASE, SCALE = 1000.0, 400.0
BOOTSTRAP_ROUNDS = 200
BOOTSTRAP_SEED = 0  # the same picks give the same intervals
MIN_PICKS_FOR_INTERVAL = 5  # resampling fewer picks than this says nothing about the spread
PRIOR = 0.1  # half a win and half a loss against a virtual average agent, so that no strength is 0 or ∞
TOLERANCE = 1e-10  # the fit stops once no log-strength moves more than this

Pair = tuple[int, int]  # (winner agent id, loser agent id)
Outcome = tuple[Pair, ...]  # one pick's pairwise results


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


def battles() -> Counter[Outcome]:
    """How many picks had each outcome (its pairwise results, sorted). The compared replies are
    found with a subquery on the picks, never a list of their ids (SQLite takes at most 32,766
    parameters in a statement)."""
    winners = dict(Pick.objects.values_list("user_message_id", "winner__agent_id").iterator())
    compared: dict[int, set[int]] = defaultdict(set)
    replies = Message.objects.filter(
        role=Message.Role.ASSISTANT, reply_to_id__in=Pick.objects.values("user_message_id")
    ).values_list("reply_to_id", "agent_id")
    for user_message_id, agent_id in replies.iterator():
        if agent_id is not None:
            compared[user_message_id].add(agent_id)
    outcomes: Counter[Outcome] = Counter()
    for user_message_id, winner in winners.items():
        if winner is None:
            continue  # the winning agent was deleted
        pairs = tuple(sorted((winner, loser) for loser in compared.get(user_message_id, ()) if loser != winner))
        if pairs:
            outcomes[pairs] += 1
    return outcomes


def bradley_terry(results: Counter[Pair], players: list[int], iterations: int = 200) -> dict[int, float]:
    """Strengths by the MM algorithm from ``results`` (how often each pair's winner beat its
    loser); each player also plays a virtual average player (PRIOR)."""
    wins: Counter[int] = Counter()
    games: dict[int, Counter[int]] = {i: Counter() for i in players}
    for (winner, loser), count in results.items():
        wins[winner] += count
        games[winner][loser] += count
        games[loser][winner] += count
    strength = dict.fromkeys(players, 1.0)
    for _ in range(iterations):
        new = {
            i: (wins[i] + PRIOR)
            / (sum(n / (strength[i] + strength[j]) for j, n in games[i].items()) + 2 * PRIOR / (strength[i] + 1.0))
            for i in players
        }
        mean = math.exp(sum(math.log(v) for v in new.values()) / len(new)) if new else 1.0
        new = {i: v / mean for i, v in new.items()}
        moved = max((abs(math.log(new[i] / strength[i])) for i in players), default=0.0)
        strength = new
        if moved < TOLERANCE:
            break
    return strength


def _rating(strength: float) -> float:
    return BASE + SCALE * math.log10(strength)


def _binomial(rng: random.Random, n: int, p: float) -> int:
    """A Binomial(n, p) draw in O(log n) steps: the middle one of n sorted uniforms is
    Beta(a, n + 1 - a)-distributed, and the draw recurses on the side of it where p falls
    (Knuth, TAOCP vol. 2, 3.4.1 F)."""
    drawn = 0
    while n > 16 and 0.0 < p < 1.0:
        a = 1 + n // 2
        split = rng.betavariate(a, n + 1 - a)
        if split >= p:
            n, p = a - 1, p / split
        else:
            drawn, n, p = drawn + a, n - a, (p - split) / (1.0 - split)
    if p >= 1.0:
        return drawn + n
    if p <= 0.0:
        return drawn
    return drawn + sum(rng.random() < p for _ in range(n))


def _resample(rng: random.Random, counts: list[int]) -> list[int]:
    """How often each outcome comes up when ``sum(counts)`` picks are drawn with replacement:
    a multinomial draw, made of one binomial draw per outcome."""
    left, rest = sum(counts), sum(counts)
    drawn = []
    for count in counts:
        k = _binomial(rng, left, count / rest) if left and rest else 0
        drawn.append(k)
        left, rest = left - k, rest - count
    return drawn


def leaderboard_compute() -> list[dict[str, Any]]:
    """The table from the picks now stored: one entry per agent id, best first."""
    outcomes = battles()
    results: Counter[Pair] = Counter()
    for pairs, count in outcomes.items():
        for pair in pairs:
            results[pair] += count
    players = sorted({p for pair in results for p in pair})
    if not players:
        return []
    strength = bradley_terry(results, players)
    picks = sum(outcomes.values())
    low: dict[int, float | None] = dict.fromkeys(players)
    high: dict[int, float | None] = dict.fromkeys(players)
    if picks >= MIN_PICKS_FOR_INTERVAL:
        rng = random.Random(BOOTSTRAP_SEED)
        kinds, counts = list(outcomes), list(outcomes.values())
        samples: dict[int, list[float]] = {p: [] for p in players}
        for _ in range(BOOTSTRAP_ROUNDS):
            resampled: Counter[Pair] = Counter()
            for pairs, drawn in zip(kinds, _resample(rng, counts), strict=True):
                for pair in pairs if drawn else ():
                    resampled[pair] += drawn
            fitted = bradley_terry(resampled, players)
            for p in players:
                samples[p].append(_rating(fitted[p]))
        for p in players:
            ordered = sorted(samples[p])
            low[p] = round(ordered[int(0.025 * (len(ordered) - 1))], 1)
            high[p] = round(ordered[int(0.975 * (len(ordered) - 1))], 1)
    wins: Counter[int] = Counter()
    losses: Counter[int] = Counter()
    for (winner, loser), count in results.items():
        wins[winner] += count
        losses[loser] += count
    table = [
        {
            "agent_id": p,
            "rating": round(_rating(strength[p]), 1),
            "rating_low": low[p],
            "rating_high": high[p],
            "wins": wins[p],
            "losses": losses[p],
        }
        for p in players
    ]
    return sorted(table, key=lambda r: -r["rating"])


def _table() -> LeaderboardTable:
    table, _ = LeaderboardTable.objects.get_or_create(pk=1)
    return table


def leaderboard_touch() -> None:
    """A pick was made or changed: the stored table is stale from now on. Call in the pick's
    transaction, so that a computation that read the picks before the pick committed cannot pass
    for current."""
    _table()
    LeaderboardTable.objects.filter(pk=1).update(version=F("version") + 1)


def leaderboard_refresh() -> None:
    """Compute the table from the picks and store it. The version and the number of picks are
    read before the picks: a pick that lands later leaves the stored table stale, never current.
    A computation that read an older version never overwrites a newer one."""
    version = _table().version
    picks = Pick.objects.count()
    rows = leaderboard_compute()
    LeaderboardTable.objects.filter(pk=1, computed_version__lte=version).update(
        rows=rows, computed_version=version, picks=picks, computed_at=timezone.now()
    )


def leaderboard(*, agents: list[Agent]) -> list[Row]:
    """The agents in ``agents`` that took part in a pick, best first, from the stored table (which
    is computed first only when it is stale)."""
    table = _table()
    if table.computed_version < table.version or table.picks != Pick.objects.count():
        leaderboard_refresh()
        table = _table()
    visible = {a.pk: a for a in agents}
    return [
        Row(
            agent=visible[r["agent_id"]].slug,
            name=visible[r["agent_id"]].name,
            rating=r["rating"],
            rating_low=r["rating_low"],
            rating_high=r["rating_high"],
            wins=r["wins"],
            losses=r["losses"],
            battles=r["wins"] + r["losses"],
        )
        for r in table.rows
        if r["agent_id"] in visible
    ]


def preferences_for_user(*, user: Any) -> list[dict[str, Any]]:
    """The user's own picks as preference pairs for fine-tuning (DPO's shape): the conversation
    before the message, the message, the chosen reply and each rejected one."""
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
