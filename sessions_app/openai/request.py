"""A chat completion request, as OpenAI's API sends it: one pydantic model checks it and gives the
OpenAPI schema of the same rules; ``completion_validate`` adds the caps of the agent it names.

The bounds of the generation settings come from ``inference.generation``, as the agents' own do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from django.conf import settings
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidatorFunctionWrapHandler, field_validator
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from agents.models import Agent
from agents.selectors import agent_get_for_user
from inference import generation
from inference.backends.base import ChatMessage
from sessions_app.openai.errors import CompletionError, completion_error_from

ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
StopString = Annotated[str, Field(min_length=1)]
UNSUPPORTED = ("tools", "functions", "tool_choice", "function_call", "logprobs", "top_logprobs", "audio", "logit_bias")


class _Strict(BaseModel):
    # JSON's kinds as they are: "0.5" is not a number, true is not 1, 2.0 is not an integer.
    # Keys this server does not know are ignored, as OpenAI's newer ones would be.
    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="ignore")


class ChatCompletionTextPart(_Strict):
    type: Literal["text"]
    text: str


class ChatCompletionMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant"] = Field(description="developer is taken as system.")
    content: str | list[ChatCompletionTextPart] = Field(description="Text, or a list of text parts.")

    @field_validator("content", mode="wrap")
    @classmethod
    def _text(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError:
            # One error for the field, not one per member of the union.
            raise PydanticCustomError("invalid_type", "Input should be a string (or a list of text parts)") from None

    @property
    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)


class ChatCompletionStreamOptions(_Strict):
    include_usage: bool | None = Field(None, description="Send the token counts in one more chunk at the end.")


class ChatCompletionResponseFormat(_Strict):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]


class ChatCompletionRequest(_Strict):
    """``POST /v1/chat/completions``. A null is the same as leaving the field out. ``max_tokens``
    (or ``max_completion_tokens``, which wins) may not exceed the agent's own ``max_tokens``."""

    model: str = Field(min_length=1, description="An agent's slug (GET /v1/models).")
    messages: list[ChatCompletionMessage] = Field(
        min_length=1, description="The conversation; the last message is the user's, and is answered."
    )
    # Refused unless empty: this server calls no tools and reports no log-probabilities.
    tools: SkipJsonSchema[Any] = None
    functions: SkipJsonSchema[Any] = None
    tool_choice: SkipJsonSchema[Any] = None
    function_call: SkipJsonSchema[Any] = None
    logprobs: SkipJsonSchema[Any] = None
    top_logprobs: SkipJsonSchema[Any] = None
    audio: SkipJsonSchema[Any] = None
    logit_bias: SkipJsonSchema[Any] = None
    response_format: ChatCompletionResponseFormat | None = Field(None, description="Only the text format.")
    frequency_penalty: float | None = generation.FREQUENCY_PENALTY.field()
    presence_penalty: float | None = generation.PRESENCE_PENALTY.field()
    n: int | None = Field(None, ge=1, le=1, description="Must be 1: this server returns one choice.")
    max_tokens: int | None = generation.MAX_TOKENS.field()
    max_completion_tokens: int | None = generation.MAX_TOKENS.field()
    temperature: float | None = generation.TEMPERATURE.field()
    top_p: float | None = generation.TOP_P.field()
    repetition_penalty: float | None = generation.REPETITION_PENALTY.field()
    seed: int | None = generation.SEED.field()
    stop: StopString | Annotated[list[StopString], Field(max_length=generation.MAX_STOP_STRINGS)] | None = Field(
        None, description="A string, or a list of strings, that ends the reply."
    )
    stream: bool | None = Field(None, description="true: server-sent events ending in [DONE].")
    stream_options: ChatCompletionStreamOptions | None = None
    store: bool | None = Field(None, description="false: do not keep this call as a session.")

    @field_validator("messages", mode="wrap")
    @classmethod
    def _conversation(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        if not isinstance(value, list) or not value:
            raise PydanticCustomError("invalid_value", "Input should be a non-empty list")
        messages = handler(value)
        if messages[-1].role != "user":
            raise PydanticCustomError("invalid_value", "The last message must be from the user")
        if not messages[-1].text.strip():
            raise PydanticCustomError("invalid_value", "The last message is empty")
        return messages

    @field_validator(*UNSUPPORTED)
    @classmethod
    def _unsupported(cls, value: Any) -> Any:
        if value not in (None, False, [], {}):
            raise PydanticCustomError("unsupported_parameter", "Not supported by this server")
        return value

    @field_validator("response_format", mode="wrap")
    @classmethod
    def _text_only(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError:
            raise PydanticCustomError("unsupported_parameter", 'Only {"type": "text"} is supported') from None

    @field_validator("stop", mode="wrap")
    @classmethod
    def _stop(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError as exc:
            # One error for the field, not one per member of the union.
            if any(error["type"] == "too_long" for error in exc.errors()):
                raise PydanticCustomError("invalid_value", f"At most {generation.MAX_STOP_STRINGS} strings") from None
            raise PydanticCustomError("invalid_type", "Input should be a non-empty string or a list of them") from None


@dataclass(frozen=True)
class CompletionRequest:
    """A validated request. ``params`` holds only what the caller set: the agent's defaults fill
    the rest when the reply is generated."""

    agent: Agent
    history: list[ChatMessage]  # the turns before the last user message, without system ones
    prompt: str  # the last user message, the one answered
    params: dict[str, Any] = field(default_factory=dict)
    stream: bool = False
    include_usage: bool = False
    store: bool = True

    @property
    def max_tokens(self) -> int:
        """The most tokens the reply may have: what the caller asked for, never above the cap."""
        return min(int(self.params.get("max_tokens", self.agent.max_tokens)), self.agent.max_tokens)


def agent_for_model(*, user: Any, model: Any) -> Agent:
    """The active agent ``model`` names that ``user`` may use; raises CompletionError (400, 404)."""
    if not isinstance(model, str) or not model:
        raise CompletionError("model must be the id of a model from /v1/models.", code="invalid_model", param="model")
    agent = agent_get_for_user(user=user, slug=model)
    if agent is None:
        raise CompletionError(
            f"The model {model!r} does not exist or you do not have access to it.",
            code="model_not_found", param="model", status=404,
        )  # fmt: skip
    return agent


def completion_validate(*, user: Any, body: Any) -> CompletionRequest:
    """Check a request body (parsed JSON) against OpenAI's rules and the agent's caps; raise
    CompletionError. An unknown model is reported before anything else in the body."""
    if not isinstance(body, dict):
        raise CompletionError("The request body must be a JSON object.", code="invalid_json")
    agent = agent_for_model(user=user, model=body.get("model"))
    try:
        call = ChatCompletionRequest.model_validate(body)
    except ValidationError as exc:
        raise completion_error_from(exc) from None

    messages: list[ChatMessage] = [{"role": ROLES[m.role], "content": m.text} for m in call.messages]
    total = sum(len(m["content"]) for m in messages)
    if total > agent.max_prompt_chars:
        raise CompletionError(
            f"The messages have {total} characters; model {agent.slug!r} accepts at most {agent.max_prompt_chars}.",
            code="prompt_too_long", param="messages",
        )  # fmt: skip
    if len(messages[-1]["content"]) > settings.MESSAGE_MAX_CHARS:
        raise CompletionError(
            f"The last message has {len(messages[-1]['content'])} characters; "
            f"the limit is {settings.MESSAGE_MAX_CHARS}.",
            code="prompt_too_long", param="messages",
        )  # fmt: skip
    token_param = "max_completion_tokens" if call.max_completion_tokens is not None else "max_tokens"
    max_tokens = getattr(call, token_param)
    if max_tokens is not None and max_tokens > agent.max_tokens:
        raise CompletionError(
            f"{token_param} is {max_tokens}; model {agent.slug!r} allows at most {agent.max_tokens}.",
            code="max_tokens_too_large", param=token_param,
        )  # fmt: skip

    params: dict[str, Any] = {"max_tokens": max_tokens, "seed": call.seed}
    for name in ("temperature", "top_p", "repetition_penalty"):
        value = getattr(call, name)
        params[name] = float(value) if value is not None else None
    params["stop"] = [call.stop] if isinstance(call.stop, str) else call.stop
    system = [m["content"] for m in messages if m["role"] == "system"]
    if system:
        # The caller's system messages replace the agent's system prompt for this call.
        params["system_prompt"] = "\n\n".join(system)
    return CompletionRequest(
        agent=agent,
        history=[m for m in messages[:-1] if m["role"] != "system"],
        prompt=messages[-1]["content"],
        params={name: value for name, value in params.items() if value is not None},
        stream=bool(call.stream),
        include_usage=bool(call.stream_options and call.stream_options.include_usage),
        store=call.store is not False,
    )
