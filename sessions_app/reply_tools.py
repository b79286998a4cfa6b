"""An agent's tool calls inside one reply, on its worker: the toolbox a reply gets, the calls read
from a generation's end, each run in a thread watched for a stop, and each stored and announced as
it starts and as it ends (``sessions_app.replies`` runs the loop around them)."""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from django.conf import settings
from django.db import connections

from inference.constraints import Constraint, ParsedCall, tool_calls_parse
from inference.reasoning import CONTENT
from sessions_app import broadcast
from sessions_app.models import Message
from sessions_app.reply_stream import Stream, answer_pieces, live_send, pend, save_partial, stop_requested
from sessions_app.tools import Toolbox, ToolRun


def toolbox_for(message: Message, constraint: Constraint | None) -> Toolbox | None:
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


def step_end(stream: Stream) -> tuple[list[ParsedCall], bool]:
    """The end of one generation: what the splitter and the call cut held back goes out, and the
    calls the model made, if any, are parsed. Also says whether a call was begun but not one
    could be read (cut off by the token limit)."""
    if stream.splitter is not None:
        pend(stream, answer_pieces(stream, stream.splitter.finish()))
        stream.splitter = None
    cut, stream.cut = stream.cut, None
    if cut is None:
        return [], False
    if cut.calls is None:
        pend(stream, answer_pieces(stream, [(CONTENT, cut.finish())]))
        return [], False
    _, calls = tool_calls_parse(cut.calls)
    return calls, not calls


def tools_run(stream: Stream, toolbox: Toolbox, calls: list[ParsedCall]) -> list[ToolRun]:
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


def _tool_wait(stream: Stream, toolbox: Toolbox, call_id: str, call: ParsedCall) -> tuple[ToolRun, float]:
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
                if not cancel.is_set() and stop_requested(stream, force=True):
                    cancel.set()


def _tool_event(stream: Stream, kind: str, run: ToolRun) -> None:
    """Store the reply's calls (with its text so far), then tell the clients."""
    save_partial(stream)
    if not stream.lost:
        live_send(broadcast.tool_send, stream.message.session_id, stream.message.pk, kind, run.as_json())


def resumed(stream: Stream) -> None:
    """The next generation starts: the time since the last step's results is the platform's."""
    if stream.results_at is not None and stream.overheads and stream.overheads[-1][1] is None:
        stream.overheads[-1][1] = round((time.monotonic() - stream.results_at) * 1000, 2)
