"""The bounds of every generation setting, declared once.

An agent's defaults (``agents.models.Agent``), a per-call override from the OpenAI-compatible API
(``sessions_app.openai.request``) and the OpenAPI schema all take their limits from here, so the
three can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.core.validators import MaxValueValidator, MinValueValidator


@dataclass(frozen=True)
class Bound:
    """An inclusive numeric range with a description, usable by Django and pydantic alike."""

    low: float
    high: float
    description: str

    def validators(self) -> list[Any]:
        """Django model-field validators for this range."""
        return [MinValueValidator(self.low), MaxValueValidator(self.high)]

    def field(self, default: Any = None) -> Any:
        """A pydantic ``Field`` with this range and description."""
        from pydantic import Field

        return Field(default, ge=self.low, le=self.high, description=self.description)


TEMPERATURE = Bound(0.0, 2.0, "Sampling temperature; 0 is greedy.")
TOP_P = Bound(0.0, 1.0, "Nucleus sampling: keep the smallest set of tokens whose probability adds up to this.")
REPETITION_PENALTY = Bound(0.5, 2.0, "Penalty on repeated tokens; 1 is none.")
MAX_TOKENS = Bound(1, 131_072, "Most tokens in one reply.")
CONTEXT_WINDOW = Bound(128, 1_048_576, "Tokens of prompt and reply the model sees at once.")
SEED = Bound(-(2**63), 2**63 - 1, "Sampling seed, for repeatable replies.")
# Accepted from OpenAI clients so that they work, but the engines here do not use them.
FREQUENCY_PENALTY = Bound(-2.0, 2.0, "Accepted for compatibility; not used by these engines.")
PRESENCE_PENALTY = Bound(-2.0, 2.0, "Accepted for compatibility; not used by these engines.")
MAX_STOP_STRINGS = 8
