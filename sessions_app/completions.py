"""Chat completions, as OpenAI's API asks for them: validate a request, keep it as a session of
the caller, queue the reply on the same workers as chat, and read how it ended.

The view (``sessions_app.openai_api``) calls these in order: ``completion_validate``,
``completion_session_create``, then, once it listens on the session's group,
``completion_start``; ``completion_discard`` when the caller asked not to store the call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction

from agents.models import Agent
from inference.backends.base import ChatMessage
from sessions_app import services
from sessions_app.models import Message, Session
from sessions_app.selectors import message_payload

ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
MAX_STOP = 8  # as many as an agent's own stop list holds
# Accepted so that common clients work, but they change nothing: the engines here do not use them.
IGNORED_NUMBERS = {"frequency_penalty": (-2.0, 2.0), "presence_penalty": (-2.0, 2.0)}
UNSUPPORTED = ("tools", "functions", "tool_choice", "function_call", "logprobs", "top_logprobs", "audio", "logit_bias")


class CompletionError(services.ChatError):
    """A request this door refuses; carries what OpenAI's error object holds."""

    def __init__(
        self, message: str, *, code: str, param: str | None = None, status: int = 400,
        kind: str = "invalid_request_error",
    ) -> None:  # fmt: skip
        super().__init__(code, message)
        self.param = param
        self.status = status
        self.kind = kind


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
    if not isinstance(model, str) or not model:
        raise CompletionError("model must be the id of a model from /v1/models.", code="invalid_model", param="model")
    agent = Agent.objects.visible_to(user).filter(slug=model, is_active=True).select_related("model").first()
    if agent is None:
        raise CompletionError(
            f"The model {model!r} does not exist or you do not have access to it.",
            code="model_not_found", param="model", status=404,
        )  # fmt: skip
    return agent


def _number(body: dict[str, Any], name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise CompletionError(f"{name} must be a number.", code="invalid_type", param=name)
    if not low <= value <= high:
        raise CompletionError(
            f"{name} must be between {low:g} and {high:g}; got {value}.", code="invalid_value", param=name
        )
    return float(value)


def _integer(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise CompletionError(f"{name} must be an integer.", code="invalid_type", param=name)
    return value


def _flag(body: dict[str, Any], name: str, default: bool) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise CompletionError(f"{name} must be true or false.", code="invalid_type", param=name)
    return value


def _content(value: Any, index: int) -> str:
    """A message's text: a string, or a list of text parts (as newer clients send)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in value):
        texts = [p.get("text") for p in value]
        if all(isinstance(t, str) for t in texts):
            return "".join(texts)  # type: ignore[arg-type]
    raise CompletionError(
        f"messages[{index}].content must be a string (or a list of text parts).",
        code="invalid_type", param=f"messages[{index}].content",
    )  # fmt: skip


def _messages(value: Any) -> list[ChatMessage]:
    if not isinstance(value, list) or not value:
        raise CompletionError("messages must be a non-empty list.", code="invalid_value", param="messages")
    messages: list[ChatMessage] = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise CompletionError(f"messages[{i}] must be an object.", code="invalid_type", param=f"messages[{i}]")
        role = ROLES.get(item.get("role"))  # type: ignore[arg-type]
        if role is None:
            raise CompletionError(
                f"messages[{i}].role must be one of system, user or assistant; got {item.get('role')!r}.",
                code="invalid_value", param=f"messages[{i}].role",
            )  # fmt: skip
        messages.append({"role": role, "content": _content(item.get("content"), i)})
    if messages[-1]["role"] != "user":
        raise CompletionError("The last message must be from the user.", code="invalid_value", param="messages")
    if not messages[-1]["content"].strip():
        raise CompletionError("The last message is empty.", code="invalid_value", param="messages")
    return messages


def _stop(value: Any) -> list[str] | None:
    if value is None:
        return None
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise CompletionError("stop must be a non-empty string or a list of them.", code="invalid_type", param="stop")
    if len(stops) > MAX_STOP:
        raise CompletionError(f"stop holds at most {MAX_STOP} strings.", code="invalid_value", param="stop")
    return stops


def completion_validate(*, user: Any, body: Any) -> CompletionRequest:
    """Check a request body against OpenAI's rules and the agent's caps; raise CompletionError."""
    if not isinstance(body, dict):
        raise CompletionError("The request body must be a JSON object.", code="invalid_json")
    agent = agent_for_model(user=user, model=body.get("model"))
    messages = _messages(body.get("messages"))
    for name in UNSUPPORTED:
        if body.get(name) not in (None, False, [], {}):
            raise CompletionError(f"{name} is not supported by this server.", code="unsupported_parameter", param=name)
    response_format = body.get("response_format")
    if response_format is not None and response_format != {"type": "text"}:
        raise CompletionError(
            "Only the text response_format is supported.", code="unsupported_parameter", param="response_format"
        )
    for name, (low, high) in IGNORED_NUMBERS.items():
        _number(body, name, low, high)

    n = _integer(body, "n")
    if n not in (None, 1):
        raise CompletionError("n must be 1: this server returns one choice.", code="invalid_value", param="n")
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

    params: dict[str, Any] = {}
    token_param = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = _integer(body, token_param)
    if max_tokens is not None:
        if max_tokens < 1:
            raise CompletionError(f"{token_param} must be at least 1.", code="invalid_value", param=token_param)
        if max_tokens > agent.max_tokens:
            raise CompletionError(
                f"{token_param} is {max_tokens}; model {agent.slug!r} allows at most {agent.max_tokens}.",
                code="max_tokens_too_large", param=token_param,
            )  # fmt: skip
        params["max_tokens"] = max_tokens
    for name, low, high in (("temperature", 0.0, 2.0), ("top_p", 0.0, 1.0), ("repetition_penalty", 0.5, 2.0)):
        value = _number(body, name, low, high)
        if value is not None:
            params[name] = value
    seed = _integer(body, "seed")
    if seed is not None:
        if not -(2**63) <= seed < 2**63:
            raise CompletionError("seed must fit in 64 bits.", code="invalid_value", param="seed")
        params["seed"] = seed
    stop = _stop(body.get("stop"))
    if stop is not None:
        params["stop"] = stop
    system = [m["content"] for m in messages if m["role"] == "system"]
    if system:
        # The caller's system messages replace the agent's system prompt for this call.
        params["system_prompt"] = "\n\n".join(system)

    stream = _flag(body, "stream", False)
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise CompletionError("stream_options must be an object.", code="invalid_type", param="stream_options")
    include_usage = _flag(options or {}, "include_usage", False)
    return CompletionRequest(
        agent=agent,
        history=[m for m in messages[:-1] if m["role"] != "system"],
        prompt=messages[-1]["content"],
        params=params,
        stream=stream,
        include_usage=include_usage,
        store=_flag(body, "store", True),
    )


def completion_session_create(*, user: Any, request: CompletionRequest) -> Session:
    """The session that keeps this call; it lists in the web UI like any other."""
    return services.session_create(owner=user, agent=request.agent, title=" ".join(request.prompt.split())[:60])


def completion_start(*, session: Session, request: CompletionRequest) -> Message:
    """Store the earlier turns as finished messages and queue the reply to the last one.

    The reply is enqueued once this commits, so a caller that joined ``session.group_name``
    before calling misses none of its events. On a refusal the session is deleted.
    """
    try:
        with transaction.atomic():
            Message.objects.bulk_create(
                Message(
                    session=session,
                    role=turn["role"],
                    content=turn["content"],
                    status=Message.Status.COMPLETE,
                    agent=request.agent if turn["role"] == Message.Role.ASSISTANT else None,
                )
                for turn in request.history
            )
            _, reply = services.message_send(
                session=session, content=request.prompt, agent=request.agent, params=request.params
            )
    except services.ChatError as exc:
        services.session_delete(session=session)
        raise CompletionError(exc.message, code=exc.code, param="messages") from exc
    return reply


def completion_stop(*, session: Session, message_id: int) -> None:
    """The caller went away mid-reply: stop generating (the partial text is kept)."""
    services.reply_stop(session=session, message_id=message_id)


def completion_discard(*, session: Session) -> None:
    """Forget a call made with ``store: false``, its reply stopped if it still runs."""
    services.session_delete(session=session)


def completion_reply_state(*, message_id: int) -> dict[str, Any] | None:
    """The reply as events carry it, read from the database; None if it was deleted."""
    message = Message.objects.select_related("agent").filter(pk=message_id).first()
    return message_payload(message) if message is not None else None


def completion_finish_reason(*, request: CompletionRequest, reply: dict[str, Any]) -> str:
    """The engine's own finish reason; for engines that give none, "length" when the reply used
    every token it was allowed, else "stop"."""
    if reply.get("finish_reason") in ("stop", "length"):
        return str(reply["finish_reason"])
    produced = reply["stats"]["completion_tokens"] or 0
    return "length" if produced >= request.max_tokens else "stop"
