"""Per-reply settings a user sends with a message (``params``), over the websocket and over REST
``POST /api/sessions/<id>/messages/``: one pydantic model for both doors, with the bounds of
``inference.generation`` that the agents' own settings and ``/v1``'s use.

A refusal is a ``PlatformError`` with code ``invalid_params``, its ``field`` the setting at fault
(``params.max_tokens``), and a message that names it (``params.max_tokens must be between 1 and
131072.``), so that the websocket's error event and the REST 400 say the same.
"""

from __future__ import annotations

from typing import Annotated, Any

from django.conf import settings
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import ErrorDetails, PydanticCustomError

from agents.models import Agent
from inference import generation
from inference.errors import PlatformError

CODE = "invalid_params"
BOUNDS = {
    "max_tokens": generation.MAX_TOKENS, "temperature": generation.TEMPERATURE, "top_p": generation.TOP_P,
    "repetition_penalty": generation.REPETITION_PENALTY, "seed": generation.SEED,
}  # fmt: skip
INTEGERS = frozenset({"max_tokens", "seed"})
# Pydantic's error types for a value of the right kind out of range (NaN and infinities included).
_RANGE_ERRORS = frozenset({"greater_than_equal", "less_than_equal", "finite_number"})

# The bounds on the type, not on the optional field, so that the schema shows them as
# ``minimum``/``maximum`` of the number.
MaxTokens = Annotated[int, Field(ge=generation.MAX_TOKENS.low, le=generation.MAX_TOKENS.high)]
Temperature = Annotated[float, Field(ge=generation.TEMPERATURE.low, le=generation.TEMPERATURE.high)]
TopP = Annotated[float, Field(ge=generation.TOP_P.low, le=generation.TOP_P.high)]
RepetitionPenalty = Annotated[float, Field(ge=generation.REPETITION_PENALTY.low, le=generation.REPETITION_PENALTY.high)]
Seed = Annotated[int, Field(ge=generation.SEED.low, le=generation.SEED.high)]


class ReplyParams(BaseModel):
    """A message's per-reply settings; any left out comes from the agent. JSON's kinds as they are
    ("0.5" is not a number, true is not 1, 1.5 is not an integer); a null is refused, not a default."""

    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="forbid")

    # ``| SkipJsonSchema[None]``: None stands for "left out" only; the schema says what may be sent.
    max_tokens: MaxTokens | SkipJsonSchema[None] = Field(
        None, description="Most tokens in this reply; at most the agent's own max_tokens."
    )
    temperature: Temperature | SkipJsonSchema[None] = Field(None, description=generation.TEMPERATURE.description)
    top_p: TopP | SkipJsonSchema[None] = Field(None, description=generation.TOP_P.description)
    repetition_penalty: RepetitionPenalty | SkipJsonSchema[None] = Field(
        None, description=generation.REPETITION_PENALTY.description
    )
    seed: Seed | SkipJsonSchema[None] = Field(None, description=generation.SEED.description)
    system_prompt: str | SkipJsonSchema[None] = Field(
        None, description="Replaces the agent's system prompt for this reply."
    )

    @field_validator("*", mode="before")
    @classmethod
    def _not_null(cls, value: Any, info: ValidationInfo) -> Any:
        # None is only the default for a setting left out; sent as null it is a wrong value.
        if value is None:
            raise PydanticCustomError(CODE, _kind_message(str(info.field_name)))
        return value

    @field_validator("system_prompt")
    @classmethod
    def _prompt_length(cls, value: str) -> str:
        # The limit is a setting (tests lower it), so it cannot be a Field bound fixed at import.
        if len(value) > settings.MESSAGE_MAX_CHARS:
            raise PydanticCustomError(CODE, _kind_message("system_prompt"))
        return value

    @field_validator("max_tokens")
    @classmethod
    def _agent_cap(cls, value: int, info: ValidationInfo) -> int:
        agent: Agent | None = (info.context or {}).get("agent")
        if agent is not None and value > agent.max_tokens:
            raise PydanticCustomError(
                CODE, "params.max_tokens is {value}; this agent allows at most {cap}.",
                {"value": value, "cap": agent.max_tokens},
            )  # fmt: skip
        return value


def reply_params_validate(raw: Any, *, agent: Agent | None) -> dict[str, Any]:
    """The settings ``raw`` sets (None: none), checked; ``max_tokens`` no more than ``agent``'s own
    when an agent is named. Raises PlatformError(``invalid_params``) naming the first bad one."""
    if raw is None:
        return {}
    try:
        params = ReplyParams.model_validate(raw, context={"agent": agent})
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        name = str(error["loc"][0]) if error["loc"] else ""
        raise PlatformError(_message(error, name), code=CODE, field=f"params.{name}" if name else "params") from None
    values = params.model_dump(exclude_unset=True)
    return {name: float(value) if name not in INTEGERS and name in BOUNDS else value for name, value in values.items()}


def _message(error: ErrorDetails, name: str) -> str:
    """Today's words for pydantic's first error (the websocket's clients and tests know them)."""
    kind = error["type"]
    if kind == CODE:
        return error["msg"]
    if not name:
        return "params must be an object."
    if kind == "extra_forbidden":
        return f"Unknown setting params.{name}; known: {', '.join(ReplyParams.model_fields)}."
    if name in BOUNDS and kind in _RANGE_ERRORS:
        bound = BOUNDS[name]
        return f"params.{name} must be between {bound.low:g} and {bound.high:g}."
    return _kind_message(name)


def _kind_message(name: str) -> str:
    if name == "system_prompt":
        return f"params.system_prompt must be a string of at most {settings.MESSAGE_MAX_CHARS} characters."
    return f"params.{name} must be {'an integer' if name in INTEGERS else 'a number'}."
