"""A chat completion request, as OpenAI's API sends it: one pydantic model checks it and gives the
OpenAPI schema of the same rules; ``completion_validate`` adds the caps of the agent it names.

The bounds of the generation settings come from ``inference.generation``, as the agents' own do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from django.conf import settings
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from agents.models import Agent
from agents.selectors import agent_get_for_user
from inference import generation
from inference.backends.base import BackendError, ChatMessage
from inference.backends.registry import backend_class
from inference.constraints import (
    TOOL_RESPONSE_OPEN,
    Constraint,
    ConstraintError,
    JsonSchema,
    Tool,
    ToolCalls,
    constraint_to_json,
    json_schema_valid,
    tool_calls_render,
    tool_response_render,
)
from sessions_app.openai.errors import CompletionError, completion_error_from

ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
StopString = Annotated[str, Field(min_length=1)]
UNSUPPORTED = ("functions", "function_call", "logprobs", "top_logprobs", "audio", "logit_bias")
JSON_OBJECT_SCHEMA: dict[str, Any] = {"type": "object"}


class _Strict(BaseModel):
    # JSON's kinds as they are: "0.5" is not a number, true is not 1, 2.0 is not an integer.
    # Keys this server does not know are ignored, as OpenAI's newer ones would be.
    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="ignore")


class ChatCompletionTextPart(_Strict):
    type: Literal["text"]
    text: str


class ToolCallFunction(_Strict):
    name: str = Field(min_length=1, max_length=64)
    arguments: str = Field(description="The arguments as JSON text.")


class ToolCallItem(_Strict):
    id: str = Field(min_length=1, max_length=100)
    type: Literal["function"]
    function: ToolCallFunction


class ChatCompletionMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"] = Field(
        description="developer is taken as system; tool carries a tool's result (tool_call_id)."
    )
    content: str | list[ChatCompletionTextPart] | None = Field(
        None, description="Text, or a list of text parts; null only for an assistant's tool calls."
    )
    tool_calls: list[ToolCallItem] | None = Field(None, description="An assistant's calls, as this server sent them.")
    tool_call_id: str | None = Field(None, min_length=1, max_length=100, description="The call a tool message answers.")

    @field_validator("content", mode="wrap")
    @classmethod
    def _text(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError:
            # One error for the field, not one per member of the union.
            raise PydanticCustomError("invalid_type", "Input should be a string (or a list of text parts)") from None

    @model_validator(mode="after")
    def _shape(self) -> ChatCompletionMessage:
        if self.role == "tool" and not self.tool_call_id:
            raise PydanticCustomError("invalid_value", "A tool message needs the tool_call_id it answers")
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise PydanticCustomError("invalid_type", "content may be null only in an assistant's tool calls")
        if self.tool_calls and self.role != "assistant":
            raise PydanticCustomError("invalid_value", "Only an assistant message has tool_calls")
        return self

    @property
    def text(self) -> str:
        if self.content is None:
            return ""
        return self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)


class FunctionDefinition(_Strict):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$", description="The function's name.")
    description: str | None = Field(None, max_length=4000)
    parameters: dict[str, Any] | None = Field(None, description="A JSON Schema of the arguments object.")
    strict: bool | None = Field(None, description="Accepted; arguments always follow the schema exactly.")


class ToolDefinition(_Strict):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(_Strict):
    name: str = Field(min_length=1, max_length=64)


class NamedToolChoice(_Strict):
    type: Literal["function"]
    function: NamedFunction


class ChatCompletionStreamOptions(_Strict):
    include_usage: bool | None = Field(None, description="Send the token counts in one more chunk at the end.")


class ResponseFormatText(_Strict):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]


class ResponseFormatJsonObject(_Strict):
    model_config = ConfigDict(extra="forbid")
    type: Literal["json_object"] = Field(description="Any JSON object.")


class JsonSchemaFormat(_Strict):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$", description="The schema's name.")
    description: str | None = Field(None, max_length=4000, description="What the answer is for.")
    schema_: dict[str, Any] = Field(
        default_factory=dict, alias="schema", description="A JSON Schema (draft 2020-12) the answer validates against."
    )
    strict: bool | None = Field(None, description="Accepted; the answer always follows the schema exactly.")


class ResponseFormatJsonSchema(_Strict):
    model_config = ConfigDict(extra="forbid")
    type: Literal["json_schema"] = Field(description="JSON valid against json_schema.schema.")
    json_schema: JsonSchemaFormat


ResponseFormat = Annotated[
    ResponseFormatText | ResponseFormatJsonObject | ResponseFormatJsonSchema, Field(discriminator="type")
]


class ChatCompletionRequest(_Strict):
    """``POST /v1/chat/completions``. A null is the same as leaving the field out. ``max_tokens``
    (or ``max_completion_tokens``, which wins) may not exceed the agent's own ``max_tokens``."""

    model: str = Field(min_length=1, description="An agent's slug (GET /v1/models).")
    messages: list[ChatCompletionMessage] = Field(
        min_length=1, description="The conversation; the last message is the user's, and is answered."
    )
    tools: list[ToolDefinition] | None = Field(
        None,
        max_length=128,
        description="Functions the model may call; their calls come back as tool_calls. Without them, "
        "an agent with tools of its own runs those on the platform (message.executed_tool_calls).",
    )
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = Field(
        None,
        description="auto (the default with tools), none, required, or one function by name; "
        "none without tools: the agent's own tools are not used either.",
    )
    parallel_tool_calls: bool | None = Field(None, description="false: at most one call per answer.")
    # Refused unless empty: the legacy function-calling fields and log-probabilities.
    functions: SkipJsonSchema[Any] = None
    function_call: SkipJsonSchema[Any] = None
    logprobs: SkipJsonSchema[Any] = None
    top_logprobs: SkipJsonSchema[Any] = None
    audio: SkipJsonSchema[Any] = None
    logit_bias: SkipJsonSchema[Any] = None
    response_format: ResponseFormat | None = Field(
        None, description="text (the default), json_object, or json_schema: decoded under the schema by the engine."
    )
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
        if messages[-1].role not in ("user", "tool"):
            raise PydanticCustomError("invalid_value", "The last message must be from the user (or a tool's result)")
        if not messages[-1].text.strip():
            raise PydanticCustomError("invalid_value", "The last message is empty")
        return messages

    @field_validator("tool_choice", mode="wrap")
    @classmethod
    def _tool_choice(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError:
            raise PydanticCustomError(
                "invalid_value",
                'Input should be "none", "auto", "required" or {"type": "function", "function": {"name"}}',
            ) from None

    @field_validator(*UNSUPPORTED)
    @classmethod
    def _unsupported(cls, value: Any) -> Any:
        if value not in (None, False, [], {}):
            raise PydanticCustomError("unsupported_parameter", "Not supported by this server")
        return value

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
    tool_calls: bool = False  # the answer may hold tool calls (in the generic format) to hand back

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

    messages = _rendered(call.messages)
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
    constraint = _tools_constraint(call) or _constraint_for(agent, call.response_format)
    if isinstance(constraint, ToolCalls) and call.response_format and call.response_format.type != "text":
        raise CompletionError(
            "response_format cannot be combined with tools here; send one or the other.",
            code="unsupported_parameter", param="response_format",
        )  # fmt: skip
    if isinstance(constraint, ToolCalls):
        _backend_can(agent, constraint, "tools")
    if constraint is not None:
        params["constraint"] = constraint_to_json(constraint)
    if call.tools or call.tool_choice == "none":
        # The agent's own tools run on the platform only for a caller that sends none of its own
        # and does not ask for none: one that sends tools runs them itself, even under "none".
        params["agent_tools"] = False
    system = [m["content"] for m in messages if m["role"] == "system"]
    if system:
        # The caller's system messages replace the agent's system prompt for this call.
        params["system_prompt"] = "\n\n".join(system)
    return CompletionRequest(
        tool_calls=isinstance(constraint, ToolCalls),
        agent=agent,
        history=[m for m in messages[:-1] if m["role"] != "system"],
        prompt=messages[-1]["content"],
        params={name: value for name, value in params.items() if value is not None},
        stream=bool(call.stream),
        include_usage=bool(call.stream_options and call.stream_options.include_usage),
        store=call.store is not False,
    )


def _constraint_for(agent: Agent, response_format: ResponseFormat | None) -> Constraint | None:
    """What ``response_format`` asks of the answer, if the agent's backend can decode under it."""
    if response_format is None or isinstance(response_format, ResponseFormatText):
        return None
    if isinstance(response_format, ResponseFormatJsonObject):
        constraint = JsonSchema(schema=JSON_OBJECT_SCHEMA, name="json_object")
    else:
        spec = response_format.json_schema
        try:
            schema = json_schema_valid(spec.schema_)
        except ConstraintError as exc:
            raise CompletionError(
                f"response_format.json_schema.schema: {exc}.", code="invalid_value", param="response_format"
            ) from None
        constraint = JsonSchema(schema=schema, name=spec.name, strict=spec.strict is not False)
    _backend_can(agent, constraint, "response_format")
    return constraint


def _backend_can(agent: Agent, constraint: Constraint, param: str) -> None:
    """Refuse, before anything is stored or queued, a constraint the agent's backend cannot decode under."""
    try:
        backend_class(agent.backend).constraint_check(constraint)
    except BackendError as exc:
        raise CompletionError(str(exc), code="unsupported_parameter", param=param) from None


def _tools_constraint(call: ChatCompletionRequest) -> ToolCalls | None:
    """The calls ``tools`` and ``tool_choice`` allow; None when the model is to answer in text."""
    choice = call.tool_choice
    if not call.tools:
        if choice not in (None, "none", "auto"):
            raise CompletionError("tool_choice asks for a tool call, but no tools were sent.",
                                  code="invalid_value", param="tool_choice")  # fmt: skip
        return None
    if choice == "none":
        return None
    tools = []
    for index, tool in enumerate(call.tools):
        parameters = tool.function.parameters or {"type": "object", "properties": {}}
        try:
            json_schema_valid(parameters)
        except ConstraintError as exc:
            param = f"tools[{index}].function.parameters"
            raise CompletionError(f"{param}: {exc}.", code="invalid_value", param=param) from None
        tools.append(Tool(tool.function.name, tool.function.description or "", parameters))
    names = [t.name for t in tools]
    if len(set(names)) != len(names):
        raise CompletionError("tools: two functions have the same name.", code="invalid_value", param="tools")
    if isinstance(choice, NamedToolChoice):
        if choice.function.name not in names:
            raise CompletionError(
                f"tool_choice names {choice.function.name!r}, which is not one of the tools.",
                code="invalid_value", param="tool_choice",
            )  # fmt: skip
        mode = choice.function.name
    else:
        mode = choice or "auto"
    return ToolCalls(tools=tuple(tools), mode=mode, parallel=call.parallel_tool_calls is not False)


def _rendered(messages: list[ChatCompletionMessage]) -> list[ChatMessage]:
    """The conversation as plain turns in the generic tool-call format (``inference.constraints``):
    an assistant's calls as ``<tool_call>`` blocks after its text, and tool results as a user turn
    of ``<tool_response>`` blocks (consecutive results in one turn). Every tool message must answer
    an earlier call."""
    rendered: list[ChatMessage] = []
    called: set[str] = set()
    for index, message in enumerate(messages):
        if message.role == "tool":
            if message.tool_call_id not in called:
                param = f"messages[{index}].tool_call_id"
                raise CompletionError(
                    f"{param}: no earlier assistant message has a tool call with id {message.tool_call_id!r}.",
                    code="invalid_value", param=param,
                )  # fmt: skip
            block = tool_response_render(message.text)
            if rendered and rendered[-1]["role"] == "user" and rendered[-1]["content"].startswith(TOOL_RESPONSE_OPEN):
                rendered[-1] = {"role": "user", "content": rendered[-1]["content"] + "\n" + block}
            else:
                rendered.append({"role": "user", "content": block})
            continue
        text = message.text
        if message.tool_calls:
            called.update(c.id for c in message.tool_calls)
            try:
                text = tool_calls_render(text, [(c.function.name, c.function.arguments) for c in message.tool_calls])
            except ConstraintError as exc:
                param = f"messages[{index}].tool_calls"
                raise CompletionError(f"{param}: {exc}.", code="invalid_value", param=param) from None
        rendered.append({"role": ROLES[message.role], "content": text})
    return rendered
