"""Generate one reply: claim it, build the prompt, stream from the backend, record the result.

This runs wherever replies run: in a Celery worker or in the embedded thread pool, through the
reply task (``sessions_app.tasks.reply_generate``), which then queues the next turn of a
multi-agent chain (``sessions_app.turns.turn_next``): a reply knows nothing of turns. It is safe
to run twice for one message: only the first run claims it.
From the claim to the end the reply holds a lease (``sessions_app.liveness``): the heartbeat keeps
it alive however long the engine takes, and a reply taken away stops at once, silently.

A database outage does not stop a reply: generation goes on, its text goes to the live buffer
(Redis) as always, the periodic saves are skipped while the database is away, and the final write
is retried for ``REPLY_DB_RETRY_SECONDS``. If the database comes back in time the reply is stored
whole and ``complete``; if not, the live buffer keeps every token and the reaper ends the reply
``interrupted`` with all of them once the database is back.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field, replace
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import close_old_connections, connection, connections
from django.utils import timezone

from inference.backends.base import Backend, BackendError, ChatMessage, GenerationParams, Usage
from inference.cache import model_cache
from inference.constraints import (
    TOOL_CALL_OPEN,
    Constraint,
    ConstraintError,
    ParsedCall,
    ToolCalls,
    constraint_from_json,
    tool_calls_parse,
    tool_calls_render,
    tool_response_render,
    tools_prompt,
)
from inference.prompt import PromptTooLong, prompt_build
from inference.reasoning import CONTENT, REASONING, Part, ThinkSplitter, reasoning_mode
from sessions_app import broadcast, trace
from sessions_app.live import CADENCE_TOKEN, stream_buffer
from sessions_app.liveness import REPLIES, Lease, claim, heartbeat, worker_name
from sessions_app.models import Message
from sessions_app.selectors import history_for_reply, message_payload
from sessions_app.tools import Toolbox, ToolRun, untrusted
from sessions_app.unavailable import DATABASE_ERRORS

log = logging.getLogger(__name__)


class _CallCut:
    """Splits a step's answer into the free text before a tool call, passed on as it comes, and
    the call itself, held back from the first character of ``<tool_call>`` (so the markup is never
    shown as the answer) and parsed when the step ends."""

    def __init__(self) -> None:
        self.held = ""
        self.calls: str | None = None

    def feed(self, text: str) -> str:
        if self.calls is not None:
            self.calls += text
            return ""
        text = self.held + text
        start = text.find(TOOL_CALL_OPEN)
        if start >= 0:
            self.held, self.calls = "", text[start:]
            return text[:start].rstrip()
        # Keep back an ending that may be the opening tag's start, and the whitespace before it
        # (the space before a call is not the answer's).
        keep = next((n for n in range(min(len(text), len(TOOL_CALL_OPEN) - 1), 0, -1)
                     if TOOL_CALL_OPEN.startswith(text[-n:])), 0)  # fmt: skip
        sent = text[: len(text) - keep].rstrip()
        self.held = text[len(sent) :]
        return sent

    def finish(self) -> str:
        """What was held back at the end of a step that called nothing."""
        held, self.held = self.held, ""
        return held


@dataclass
class _Stream:
    message: Message
    lease: Lease
    text: str = ""
    reasoning: str = ""
    # Text not yet sent, in order, each piece the answer's or the thinking's.
    pending: list[tuple[Part, str]] = field(default_factory=list)
    # Splits a reasoning model's thinking from its answer; None: all text is the answer.
    splitter: ThinkSplitter | None = None
    reasoning_started: float | None = None
    reasoning_ended: float | None = None
    reasoning_chunks: int = 0
    seq: int = 0
    saved_seq: int = 0
    started: float = 0.0
    first_token: float | None = None
    last_flush: float = 0.0
    last_save: float = 0.0
    last_poll: float = 0.0
    last_owned: float = 0.0  # the last forced read of the row before sending text
    stop_seen: bool = False
    db_down_since: float | None = None
    # The agent's tool calls so far (ToolRun.as_json), stored with the row at each save.
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    # Holds back a tool call's text while the model writes it (None: no tools this step).
    cut: _CallCut | None = None
    # The answer's text of this step: what the model said before its calls.
    step_text: str = ""
    # A later step's answer starts a new paragraph after the text before the calls.
    paragraph: bool = False
    completion_tokens: int = 0
    step_first_token: float | None = None
    step_tokens: int = 0
    reasons: bool = False  # a splitter ran: the agent's model reasons (reasoning_tokens is counted)
    # Per call, the platform's own time in ms: parsed -> the tool started, its result -> the next
    # generation started (None until it starts).
    overheads: list[list[float | None]] = field(default_factory=list)
    results_at: float | None = None

    @property
    def lost(self) -> bool:
        """The row is no longer ours (reaped, deleted, finished elsewhere): send nothing more."""
        return self.lease.lost.is_set()


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
        broadcast.flush()
        close_old_connections()
    return True


def _generate_claimed(message_id: int, lease: Lease) -> None:
    message = Message.objects.select_related("session", "agent", "agent__model").filter(pk=message_id).first()
    if message is None:
        return  # deleted between the claim and now
    _live(broadcast.message_send, message.session_id, message_payload(message))
    stream = _Stream(message=message, lease=lease, started=time.monotonic())
    try:
        _generate(stream)
    except BackendError as exc:
        if exc.detail:
            # The error is for every user of the agent; what the model server said is for staff.
            log.warning("reply %s failed: %s Details: %s", message_id, exc, exc.detail)
        hint = " Trying again may help." if exc.retryable else ""
        _finish(stream, Message.Status.FAILED, error=f"{exc}{hint}")
    except PromptTooLong as exc:
        _finish(stream, Message.Status.FAILED, error=str(exc))
    except SoftTimeLimitExceeded:
        _finish(
            stream,
            Message.Status.FAILED,
            error=f"The reply ran past the worker's time limit ({settings.CELERY_TASK_SOFT_TIME_LIMIT} s); "
            "its text so far is kept. Ask for a shorter answer or raise CELERY_TASK_SOFT_TIME_LIMIT.",
        )
    except Exception as exc:  # the reply must end, whatever broke
        log.exception("reply %s failed", message_id)
        _finish(stream, Message.Status.FAILED, error=f"Internal error in the worker: {type(exc).__name__}: {exc}")


def _generate(stream: _Stream) -> None:
    message = stream.message
    agent = message.agent
    if agent is None:
        raise BackendError("The agent of this reply was deleted.")
    if message.cancel_requested:
        _finish(stream, Message.Status.CANCELLED)
        return
    plan = agent.load_plan()
    with model_cache().use(plan.key, plan.build) as backend:
        context = min(agent.context_window, backend.context_length() or agent.context_window)
        if not backend.counts_tokens:
            # Token counts are estimates here: keep a tenth of the window spare.
            context = int(context * 0.9)
        overrides = message.params or {}
        constraint = _constraint_of(overrides)
        toolbox = _toolbox_for(message, constraint)
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
            stream.cut = _CallCut() if tools is not None else None
            stream.step_text = ""
            if step == 0:
                trace.mark(message.pk, "prompt")
            else:
                _resumed(stream)
            finish, usage = _stream_step(stream, backend, prompt.messages, params)
            if stream.lost:
                log.info("reply %s was taken from this worker; its end is not recorded here", message.pk)
                return
            calls, cut_short = _step_end(stream)
            if cut_short and finish == "length":
                _finish(stream, Message.Status.FAILED, finish_reason="length", error=(
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
            runs = _tools_run(stream, toolbox, calls)
            if stream.stop_seen or stream.lost or len(runs) < len(calls):
                break
            made = tool_calls_render(stream.step_text, [(c.name, c.arguments) for c in calls])
            results = "\n".join(tool_response_render(untrusted(r.for_model())) for r in runs)
            turns += [{"role": "assistant", "content": made}, {"role": "user", "content": results}]
            step += 1
    if stream.lost:
        log.info("reply %s was taken from this worker; its end is not recorded here", message.pk)
        return
    _flush(stream)
    status = Message.Status.CANCELLED if finish == "cancelled" or stream.stop_seen else Message.Status.COMPLETE
    total = Usage(usage.prompt_tokens, stream.completion_tokens) if usage is not None else None
    _finish(stream, status, usage=total, finish_reason="cancelled" if status == Message.Status.CANCELLED else finish)


def _toolbox_for(message: Message, constraint: Constraint | None) -> Toolbox | None:
    """The agent's tools for this reply, or None: it has none, its ``tool_choice`` is "none", or
    the door that asked set a constraint of its own (``/v1`` with ``tools`` or
    ``response_format``: the client runs its tools itself, or wants the format), or asked for
    none (``params["agent_tools"]`` false)."""
    agent = message.agent
    if agent is None or constraint is not None or not agent.tools or agent.tool_choice == "none":
        return None
    if (message.params or {}).get("agent_tools") is False:
        return None  # the door asked for none (/v1's tool_choice "none" with no tools of its own)
    toolbox = Toolbox(agent, message.session.owner, reply=message)
    return toolbox if toolbox.specs else None


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


def _stop_requested(stream: _Stream, *, force: bool = False) -> bool:
    """Whether to stop: a stop was asked for, or the reply is no longer ours. Polled between
    tokens, so it reads the database at most every ``REPLY_STOP_POLL_MS``; ``force`` reads
    it now (before text is sent), which also restarts that interval."""
    if stream.stop_seen or stream.lost:
        return True
    now = time.monotonic()
    if force or now - stream.last_poll >= settings.REPLY_STOP_POLL_MS / 1000:
        stream.last_poll = now
        try:
            row = (
                Message.objects.filter(pk=stream.message.pk).values_list("cancel_requested", "status", "worker").first()
            )
        except DATABASE_ERRORS as exc:
            # Nobody can take the reply while the database is away: go on generating.
            _database_lost(stream, exc)
            return False
        _database_back(stream)
        if row is None or row[1] != Message.Status.STREAMING or row[2] != worker_name():
            stream.lease.lost.set()  # deleted (an edit), reaped, or finished elsewhere
        elif row[0]:
            stream.stop_seen = True
    return stream.stop_seen or stream.lost


def _stream_step(
    stream: _Stream, backend: Backend, messages: list[ChatMessage], params: GenerationParams
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
        should_stop=lambda: _stop_requested(stream),
        session_key=f"session-{stream.message.session_id}",
    ):
        now = time.monotonic()
        if chunk.text:
            if stream.first_token is None:
                stream.first_token = now
                trace.mark(stream.message.pk, "engine_first")
            if stream.step_first_token is None:
                stream.step_first_token = now
            _take(stream, chunk.text, now)
            if now - stream.last_flush >= flush_every:
                _flush(stream)
                stream.last_flush = now
            if now - stream.last_save >= save_every:
                _save_partial(stream)
                stream.last_save = now
        if chunk.finish_reason:
            finish = chunk.finish_reason
            usage = chunk.usage
    if usage is not None:
        stream.completion_tokens += usage.completion_tokens
        stream.step_tokens = usage.completion_tokens
    return finish, usage


def _step_end(stream: _Stream) -> tuple[list[ParsedCall], bool]:
    """The end of one generation: what the splitter and the call cut held back goes out, and the
    calls the model made, if any, are parsed. Also says whether a call was begun but not one
    could be read (cut off by the token limit)."""
    if stream.splitter is not None:
        _pend(stream, _answer(stream, stream.splitter.finish()))
        stream.splitter = None
    cut, stream.cut = stream.cut, None
    if cut is None:
        return [], False
    if cut.calls is None:
        _pend(stream, _answer(stream, [(CONTENT, cut.finish())]))
        return [], False
    _, calls = tool_calls_parse(cut.calls)
    return calls, not calls


def _tools_run(stream: _Stream, toolbox: Toolbox, calls: list[ParsedCall]) -> list[ToolRun]:
    """Run the step's calls in order, each stored and announced as it starts and as it ends.
    Stops at a stop (the running call is cancelled) or when the reply is no longer ours."""
    runs: list[ToolRun] = []
    for call in calls:
        parsed_at = time.monotonic()
        run = ToolRun(id=f"call_{uuid.uuid4().hex[:24]}", name=toolbox.name_of(call.name), arguments=call.arguments)
        stream.tool_calls.append(run.as_json())
        _tool_event(stream, "tool_call", run)
        if stream.lost:
            break
        done, started = _tool_wait(stream, toolbox, run.id, call)
        stream.tool_calls[-1] = done.as_json()
        stream.overheads.append([round((started - parsed_at) * 1000, 2), None])
        _tool_event(stream, "tool_result", done)
        runs.append(done)
        if stream.stop_seen or stream.lost:
            break
    stream.results_at = time.monotonic()
    stream.paragraph = bool(stream.text or stream.pending)
    return runs


def _tool_wait(stream: _Stream, toolbox: Toolbox, call_id: str, call: ParsedCall) -> tuple[ToolRun, float]:
    """Run one call in a thread of its own while this one watches for a stop: a stop (or the
    reply taken away) cancels the call, which then ends within the tool's cancellation.
    Returns the finished call and when it started."""
    cancel = threading.Event()
    started: list[float] = []

    def run() -> ToolRun:
        started.append(time.monotonic())
        try:
            return toolbox.run(call_id, call.name, call.arguments, cancel)
        finally:
            connections.close_all()  # this thread's own, if the tool read the database

    poll = max(settings.REPLY_STOP_POLL_MS / 1000, 0.05)
    with ThreadPoolExecutor(1, thread_name_prefix=f"tool-{stream.message.pk}") as pool:
        future = pool.submit(run)
        while True:
            try:
                return future.result(timeout=poll), started[0]
            except FutureTimeout:
                if not cancel.is_set() and _stop_requested(stream, force=True):
                    cancel.set()


def _tool_event(stream: _Stream, kind: str, run: ToolRun) -> None:
    """Store the reply's calls (with its text so far), then tell the clients."""
    _save_partial(stream)
    if not stream.lost:
        _live(broadcast.tool_send, stream.message.session_id, stream.message.pk, kind, run.as_json())


def _resumed(stream: _Stream) -> None:
    """The next generation starts: the time since the last step's results is the platform's."""
    if stream.results_at is not None and stream.overheads and stream.overheads[-1][1] is None:
        stream.overheads[-1][1] = round((time.monotonic() - stream.results_at) * 1000, 2)


def _take(stream: _Stream, text: str, now: float) -> None:
    """Queue the engine's ``text`` for sending, split into thinking and answer when the agent
    reasons (and a tool call held back from the answer); count the thinking's chunks (one token
    each on our engines) and time it."""
    splitter = stream.splitter
    if splitter is None:
        _pend(stream, _answer(stream, [(CONTENT, text)]))
        return
    before = splitter.phase
    pieces = splitter.feed(text)
    if REASONING in (before, splitter.phase):
        stream.reasoning_chunks += 1
        if stream.reasoning_started is None:
            stream.reasoning_started = now
        if splitter.phase == CONTENT:
            stream.reasoning_ended = now  # this chunk closed the thinking
    _pend(stream, _answer(stream, pieces))


def _answer(stream: _Stream, pieces: list[tuple[Part, str]]) -> list[tuple[Part, str]]:
    """The answer's pieces with a tool call's text held back, and a later step's answer as a new
    paragraph after the text the model wrote before its calls."""
    out: list[tuple[Part, str]] = []
    for part, text in pieces:
        if part == CONTENT:
            if stream.cut is not None:
                text = stream.cut.feed(text)
            if stream.paragraph:
                text = text.lstrip()
                if text:
                    text, stream.paragraph = "\n\n" + text, False
            stream.step_text += text
        if text:
            out.append((part, text))
    return out


def _pend(stream: _Stream, pieces: list[tuple[Part, str]]) -> None:
    for part, text in pieces:
        if stream.pending and stream.pending[-1][0] == part:
            stream.pending[-1] = (part, stream.pending[-1][1] + text)
        else:
            stream.pending.append((part, text))


def _live(send: Any, *args: Any) -> None:
    """Send a live update; if Redis is down the reply goes on and the database keeps the text."""
    try:
        send(*args)
    except Exception as exc:
        log.warning("live update failed (%s: %s); the reply continues", type(exc).__name__, exc)


def _flush(stream: _Stream) -> None:
    if not stream.pending:
        return
    # A reply taken from this worker sends nothing more: a primary-key read before sending text,
    # at most every REPLY_BROADCAST_INTERVAL_MS (also when each token is sent), makes sure of it.
    # The first text goes out at once (the row was claimed moments ago); the read follows it.
    if stream.seq > 0:
        now = time.monotonic()
        force = now - stream.last_owned >= settings.REPLY_BROADCAST_INTERVAL_MS / 1000
        if force:
            stream.last_owned = now
        _stop_requested(stream, force=force)
    if stream.lost:
        return
    pending, stream.pending = stream.pending, []
    for part, text in pending:  # one delta, with its own seq, per part
        stream.seq += 1
        if part == REASONING:
            stream.reasoning += text
        else:
            stream.text += text
        # Buffer first, then broadcast: a client joining in between finds the text in the buffer.
        # Both leave from the sender's thread, in order: the decode loop does not wait on Redis.
        message_id, seq = stream.message.pk, stream.seq
        broadcast.delta_buffered_send(
            stream.message.session_id, message_id, seq, text, stream_buffer().append, part=part
        )
        if seq == 1:
            trace.mark(message_id, "sent")


def _database_lost(stream: _Stream, exc: BaseException) -> None:
    if stream.db_down_since is None:
        stream.db_down_since = time.monotonic()
        log.warning("reply %s: the database is unavailable (%s); generation goes on", stream.message.pk, exc)
    _connection_drop()


def _database_back(stream: _Stream) -> None:
    if stream.db_down_since is not None:
        log.warning(
            "reply %s: the database is back after %.1f s", stream.message.pk, time.monotonic() - stream.db_down_since
        )
        stream.db_down_since = None


def _connection_drop() -> None:
    """Forget this thread's broken connection: the next query opens a fresh one."""
    try:
        connection.close()
    except Exception as exc:
        log.debug("closing a broken database connection: %s", exc)


def _save_partial(stream: _Stream) -> None:
    _flush(stream)
    if stream.lost:
        return
    try:
        saved = Message.objects.filter(
            pk=stream.message.pk, status=Message.Status.STREAMING, worker=worker_name()
        ).update(content=stream.text, reasoning=stream.reasoning, seq=stream.seq, tool_calls=stream.tool_calls)
    except DATABASE_ERRORS as exc:
        _database_lost(stream, exc)  # the text is in memory and in the live buffer; saved next time
        return
    _database_back(stream)
    if not saved:
        stream.lease.lost.set()
    stream.saved_seq = stream.seq


def _write_final(stream: _Stream, fields: dict[str, Any]) -> bool | None:
    """The final, conditional write of the reply, retried while the database is away.

    Returns whether it was written (False: the reply is no longer ours), or None when the database
    stayed away for ``REPLY_DB_RETRY_SECONDS``: the live buffer then keeps the text for the reaper.
    """
    deadline = time.monotonic() + settings.REPLY_DB_RETRY_SECONDS
    pause = 0.25
    while True:
        try:
            # Only a reply still ours is finished: the reaper may have declared this worker dead.
            updated = Message.objects.filter(
                pk=stream.message.pk, status=Message.Status.STREAMING, worker=worker_name()
            ).update(**fields)
        except DATABASE_ERRORS as exc:
            _database_lost(stream, exc)
            if time.monotonic() + pause > deadline:
                log.error(
                    "reply %s: the database stayed unavailable for %s s; its %s characters stay in the live "
                    "buffer and the reaper ends it `interrupted` once the database is back",
                    stream.message.pk, settings.REPLY_DB_RETRY_SECONDS, len(stream.text),
                )  # fmt: skip
                return None
            time.sleep(pause)
            pause = min(pause * 2, 2.0)
            continue
        _database_back(stream)
        return bool(updated)


def _finish(stream: _Stream, status: str, *, error: str = "", usage: Any = None, finish_reason: str = "") -> None:
    if stream.lost:
        message_id = stream.message.pk
        broadcast.in_order("live buffer discard", lambda: stream_buffer().discard(message_id))
        return
    end = time.monotonic()
    if stream.splitter is not None:
        _pend(stream, stream.splitter.finish())  # a held-back tail that began no tag after all
    _flush(stream)
    message = stream.message
    for call, (before, after) in zip(stream.tool_calls, stream.overheads, strict=False):
        call["overhead_ms"] = {"start": before, "resume": after}
    fields: dict[str, Any] = {
        "status": status,
        "content": stream.text,
        "reasoning": stream.reasoning,
        "tool_calls": stream.tool_calls,
        "seq": stream.seq,
        "error": error,
        "finished_at": timezone.now(),
        "heartbeat_at": timezone.now(),
    }
    if stream.first_token is not None:
        fields["ttft_ms"] = round((stream.first_token - stream.started) * 1000, 1)
    if stream.reasons or stream.splitter is not None:
        fields["reasoning_tokens"] = stream.reasoning_chunks
    if stream.reasoning and stream.reasoning_started is not None:
        # A thinking never closed lasted until the reply ended.
        fields["reasoning_ms"] = round(((stream.reasoning_ended or end) - stream.reasoning_started) * 1000)
    if finish_reason:
        fields["finish_reason"] = finish_reason
    if usage is not None:
        fields["prompt_tokens"] = usage.prompt_tokens
        fields["completion_tokens"] = usage.completion_tokens
        # After tool calls, the last generation's speed: the time between steps is the tools'.
        first = stream.step_first_token if stream.tool_calls else stream.first_token
        tokens = stream.step_tokens if stream.tool_calls else usage.completion_tokens
        decode_time = end - (first or end)
        if tokens > 1 and decode_time > 0:
            fields["decode_tps"] = round((tokens - 1) / decode_time, 2)
    updated = _write_final(stream, fields)
    if updated is None:
        return  # the live buffer keeps the text until the reaper stores it
    broadcast.in_order("live buffer discard", lambda: stream_buffer().discard(message.pk))
    if not updated:
        return
    message.refresh_from_db()
    _live(broadcast.done_send, message.session_id, message_payload(message))
