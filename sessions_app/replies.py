"""Generate one reply: claim it, build the prompt, stream from the backend, record the result.

This runs wherever replies run: in a Celery worker or in the embedded thread pool, through the
reply task (``sessions_app.tasks.reply_generate``), which then queues the next turn of a
multi-agent chain (``sessions_app.turns.turn_next``): a reply knows nothing of turns. It is safe
to run twice for one message: only the first run claims it.
From the claim to the end the reply holds a lease (``sessions_app.liveness``): the heartbeat keeps
it alive however long the engine takes, and a reply taken away stops at once, silently.

An agent with tools generates in steps: under the tool-call constraint, its calls run
(``sessions_app.reply_tools``), their results go back into the prompt, and it generates again up
to ``max_tool_steps``. The text's way to the row and the clients, and a database outage on that
way, are ``sessions_app.reply_stream``'s.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from inference.backends.base import Backend, BackendError, ChatMessage, GenerationParams, Usage
from inference.cache import model_cache
from inference.constraints import (
    Constraint,
    ConstraintError,
    ToolCalls,
    constraint_from_json,
    tool_calls_render,
    tool_response_render,
    tools_prompt,
)
from inference.prompt import PromptTooLong, prompt_build
from inference.reasoning import ThinkSplitter, reasoning_mode
from sessions_app import broadcast, trace
from sessions_app.live import CADENCE_TOKEN
from sessions_app.liveness import REPLIES, Lease, claim, heartbeat
from sessions_app.models import Message
from sessions_app.reply_stream import (
    CallCut,
    Stream,
    flush,
    live_send,
    reply_finish,
    save_partial,
    stop_requested,
    take,
)
from sessions_app.reply_tools import resumed, step_end, toolbox_for, tools_run
from sessions_app.selectors import history_for_reply, message_payload
from sessions_app.tools import untrusted

log = logging.getLogger(__name__)


def reply_generate(*, message_id: int) -> bool:
    """Generate the reply ``message_id`` if it is still queued; otherwise do nothing.

    Returns whether this call claimed it (a second delivery of the same task returns False).
    """
    trace.mark(message_id, "task")
    close_old_connections()
    claimed = claim(REPLIES, message_id, queued=Message.Status.QUEUED, started_at=timezone.now())
    if not claimed:
        log.info("reply %s already claimed or finished; nothing to do", message_id)
        return False
    trace.mark(message_id, "claimed")
    lease = heartbeat().hold(REPLIES, message_id)
    try:
        _generate_claimed(message_id, lease)
    finally:
        heartbeat().release(lease)
        close_old_connections()
    return True


def _generate_claimed(message_id: int, lease: Lease) -> None:
    message = Message.objects.select_related("session", "agent", "agent__model").filter(pk=message_id).first()
    if message is None:
        return  # deleted between the claim and now
    live_send(broadcast.message_send, message.session_id, message_payload(message))
    stream = Stream(message=message, lease=lease, started=time.monotonic())
    try:
        _generate(stream)
    except BackendError as exc:
        if exc.detail:
            # The error is for every user of the agent; what the model server said is for staff.
            log.warning("reply %s failed: %s Details: %s", message_id, exc, exc.detail)
        hint = " Trying again may help." if exc.retryable else ""
        reply_finish(stream, Message.Status.FAILED, error=f"{exc}{hint}")
    except PromptTooLong as exc:
        reply_finish(stream, Message.Status.FAILED, error=str(exc))
    except SoftTimeLimitExceeded:
        reply_finish(
            stream,
            Message.Status.FAILED,
            error=f"The reply ran past the worker's time limit ({settings.CELERY_TASK_SOFT_TIME_LIMIT} s); "
            "its text so far is kept. Ask for a shorter answer or raise CELERY_TASK_SOFT_TIME_LIMIT.",
        )
    except Exception as exc:  # the reply must end, whatever broke
        log.exception("reply %s failed", message_id)
        reply_finish(stream, Message.Status.FAILED, error=f"Internal error in the worker: {type(exc).__name__}: {exc}")


def _generate(stream: Stream) -> None:
    message = stream.message
    agent = message.agent
    if agent is None:
        raise BackendError("The agent of this reply was deleted.")
    if message.cancel_requested:
        reply_finish(stream, Message.Status.CANCELLED)
        return
    plan = agent.load_plan()
    with model_cache().use(plan.key, plan.build) as backend:
        context = min(agent.context_window, backend.context_length() or agent.context_window)
        if not backend.counts_tokens:
            # Token counts are estimates here: keep a tenth of the window spare.
            context = int(context * 0.9)
        overrides = message.params or {}
        constraint = _constraint_of(overrides)
        toolbox = toolbox_for(message, constraint)
        tools = ToolCalls(toolbox.constraint_tools()) if toolbox is not None else None
        backend.constraint_check(tools or constraint)  # before a token: a backend that cannot says so
        system_prompt = overrides.get("system_prompt", agent.system_prompt)
        told = tools or constraint
        if isinstance(told, ToolCalls) and not backend.renders_tools:
            # The generic tool-call format, told in the system prompt (inference.constraints).
            system_prompt = "\n\n".join(p for p in (system_prompt, tools_prompt(told)) if p)
        history = history_for_reply(message)
        max_tokens = min(overrides.get("max_tokens", agent.max_tokens), agent.max_tokens)
        turns: list[ChatMessage] = []  # this reply's tool calls and results, after the history
        step = 0
        while True:
            step_constraint = constraint
            if tools is not None and step < agent.max_tool_steps:
                # "required": the first step must call; later ones may answer.
                must = step == 0 and agent.tool_choice == "required"
                step_constraint = replace(tools, mode="required" if must else "auto")
            prompt = prompt_build(
                system_prompt=system_prompt,
                history=history + turns,
                count_tokens=backend.count_tokens,
                context_window=context,
                max_tokens=max_tokens,
            )
            params = GenerationParams(
                constraint=step_constraint,
                max_tokens=prompt.max_tokens,
                temperature=overrides.get("temperature", agent.temperature),
                top_p=overrides.get("top_p", agent.top_p),
                repetition_penalty=overrides.get("repetition_penalty", agent.repetition_penalty),
                stop=tuple(overrides.get("stop", agent.stop) or ()),
                seed=overrides.get("seed"),
            )
            stream.splitter = _splitter_for(agent.reasoning, backend, step_constraint)
            stream.reasons = stream.reasons or stream.splitter is not None
            stream.cut = CallCut() if tools is not None else None
            stream.step_text = ""
            if step == 0:
                trace.mark(message.pk, "prompt")
            else:
                resumed(stream)
            finish, usage = _stream_step(stream, backend, prompt.messages, params)
            if stream.lost:
                log.info("reply %s was taken from this worker; its end is not recorded here", message.pk)
                return
            calls, cut_short = step_end(stream)
            if cut_short and finish == "length":
                reply_finish(stream, Message.Status.FAILED, finish_reason="length", error=(
                    f"The model's tool call was cut off at the token limit ({params.max_tokens} tokens); "
                    "raise the agent's max_tokens."
                ))  # fmt: skip
                return
            if not calls or stream.stop_seen or finish == "cancelled":
                break
            if step_constraint is None:
                # The last step may not call: its calls are left out, its text is the answer.
                log.info("reply %s: %d tool call(s) past max_tool_steps left out", message.pk, len(calls))
                break
            assert toolbox is not None
            runs = tools_run(stream, toolbox, calls)
            if stream.stop_seen or stream.lost or len(runs) < len(calls):
                break
            made = tool_calls_render(stream.step_text, [(c.name, c.arguments) for c in calls])
            results = "\n".join(tool_response_render(untrusted(r.for_model())) for r in runs)
            turns += [{"role": "assistant", "content": made}, {"role": "user", "content": results}]
            step += 1
    if stream.lost:
        log.info("reply %s was taken from this worker; its end is not recorded here", message.pk)
        return
    flush(stream)
    status = Message.Status.CANCELLED if finish == "cancelled" or stream.stop_seen else Message.Status.COMPLETE
    total = Usage(usage.prompt_tokens, stream.completion_tokens) if usage is not None else None
    reply_finish(
        stream, status, usage=total, finish_reason="cancelled" if status == Message.Status.CANCELLED else finish
    )


def _splitter_for(option: str, backend: Backend, constraint: Constraint | None) -> ThinkSplitter | None:
    """The splitter of a reasoning model's output, or None when nothing is to be split: the agent
    says so, or a grammar writes the whole answer from its first token (only "auto" tool calls
    let free text, and so thinking, come first)."""
    if constraint is not None and not (isinstance(constraint, ToolCalls) and constraint.mode == "auto"):
        return None
    template = backend.chat_template()
    enabled, opened = reasoning_mode(option, template)
    return ThinkSplitter(opened=opened) if enabled else None


def _constraint_of(overrides: dict[str, Any]) -> Constraint | None:
    """The constraint the door that asked for the reply stored with it (``/v1``'s
    ``response_format``), checked again: the row may have been written by an older version."""
    stored = overrides.get("constraint")
    if not stored:
        return None
    try:
        return constraint_from_json(stored)
    except ConstraintError as exc:
        raise BackendError(f"The reply's output constraint is not valid: {exc}") from exc


def _stream_step(
    stream: Stream, backend: Backend, messages: list[ChatMessage], params: GenerationParams
) -> tuple[str, Usage | None]:
    """Stream one generation into the reply; returns its finish reason and usage."""
    # The door that asked for the reply chose its cadence: every token for an API client
    # (/v1, REST + SSE), which measures inter-token latency; batches for the browser.
    token_cadence = (stream.message.params or {}).get("cadence") == CADENCE_TOKEN
    flush_every = 0.0 if token_cadence else settings.REPLY_BROADCAST_INTERVAL_MS / 1000
    save_every = settings.REPLY_SAVE_INTERVAL_MS / 1000
    finish = "stop"
    usage = None
    stream.step_first_token = None
    for chunk in backend.stream_chat(
        messages,
        params,
        should_stop=lambda: stop_requested(stream),
        session_key=f"session-{stream.message.session_id}",
    ):
        now = time.monotonic()
        if chunk.text:
            if stream.first_token is None:
                stream.first_token = now
                trace.mark(stream.message.pk, "engine_first")
            if stream.step_first_token is None:
                stream.step_first_token = now
            take(stream, chunk.text, now)
            if now - stream.last_flush >= flush_every:
                flush(stream)
                stream.last_flush = now
            if now - stream.last_save >= save_every:
                save_partial(stream)
                stream.last_save = now
        if chunk.finish_reason:
            finish = chunk.finish_reason
            usage = chunk.usage
    if usage is not None:
        stream.completion_tokens += usage.completion_tokens
        stream.step_tokens = usage.completion_tokens
    return finish, usage
