"""``ask_agent``: an agent consults another agent the user may use, and reads its answer as the
tool's result.

A consultation is a session of its own, owned by the user, answered by the consulted agent, with
``consulted_by`` naming the asking reply: the question is its user message, the answer its reply,
generated as any reply is and readable by id (the web UI's tool card links to it), but never
listed with the user's chats (``selectors.session_list_for_user``).

- **Who may be asked**: an active agent the user may use (``agents.selectors``), never the asking
  agent, never one already in the chain of consultations that led here (A asks B, B cannot ask A).
- **Depth**: a chat the user started is depth 0; a consultation opened by a reply at depth d is at
  depth d + 1; a reply at ``MAX_DEPTH`` may not consult. ``ask_agent_spec`` leaves the tool out of
  such a reply's toolbox (the model cannot call it), and names the agents it may ask as an enum,
  so the engine's grammar can only write a valid one; ``ask_agent`` checks all of it again.
- **Its own worker**: the reply is sent to the consulted agent's queue and this thread waits for it
  to end, reading its row every ``POLL_SECONDS``. When this very worker serves that queue (the
  embedded default, whose reply lane has a couple of threads, or a Celery worker of
  ``--concurrency 1`` such as the llama.cpp one), sending it there would wait for a slot this reply
  holds: the reply is generated here, in this thread, instead.
- **Stop and timeout**: the asking reply's stop (``cancel``) stops the consultation and ends the
  call ``cancelled``; past ``ASK_AGENT_TIMEOUT_SECONDS`` it is stopped and the model reads the
  timeout as the tool's error, as it does a consultation that failed.

A reply imports nothing of sessions, turns or dispatch (the import contract in ``pyproject.toml``),
and this module is part of its tool loop: so the rows are written here with the models, and the
reply task is named, not imported (``inference.runtime.pool``).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from agents.models import Agent
from agents.selectors import agent_get_for_user, agent_list_for_user
from inference.runtime.pool import task_run
from inference.tools.base import ToolCancelled, ToolError, ToolSpec
from inference.tools.builtin import arguments_check
from sessions_app import broadcast
from sessions_app.models import Message, Participant, Session
from sessions_app.selectors import message_payload
from sessions_app.tool_builtins import ASK_AGENT

log = logging.getLogger(__name__)

# A reply at this depth may not consult: the user's chat (0) -> a consultation (1) -> its own (2).
MAX_DEPTH = 2
POLL_SECONDS = 0.1
# The most agents the model is offered by name (the enum of the call's grammar).
MAX_OFFERED = 50
# The reply task, by name: sessions_app.dispatch.REPLY_GENERATE (which a reply may not import).
REPLY_GENERATE = "sessions_app.tasks.reply_generate"
UNFINISHED = (Message.Status.QUEUED, Message.Status.STREAMING)


def consultation_chain(reply: Message | None) -> list[Message]:
    """``reply`` and the replies whose consultations led to it, nearest first: one reply in a chat
    the user started, so the reply's depth is the list's length less one."""
    chain: list[Message] = []
    current = reply
    while current is not None and len(chain) <= MAX_DEPTH + 1:  # the bound holds whatever the rows say
        chain.append(current)
        session = current.session
        current = (
            Message.objects.select_related("session", "agent").filter(pk=session.consulted_by_id).first()
            if session.consulted_by_id is not None
            else None
        )
    return chain


def _chain_agents(asking: Agent, chain: list[Message]) -> set[int]:
    return {asking.pk, *(m.agent_id for m in chain if m.agent_id is not None)}


def ask_agent_spec(*, agent: Agent, user: Any, reply: Message | None) -> ToolSpec | None:
    """``ask_agent`` as this reply's model is told of it: the agents it may ask, by slug, as the
    ``agent`` argument's enum. None (the tool is left out) when the reply may not consult: at
    ``MAX_DEPTH``, or with no agent to ask."""
    chain = consultation_chain(reply)
    if len(chain) - 1 >= MAX_DEPTH:
        return None
    taken = _chain_agents(agent, chain)
    offered = [
        (a.slug, a.name)
        for a in agent_list_for_user(user=user).exclude(pk__in=taken).order_by("name", "slug")[:MAX_OFFERED]
    ]
    if not offered:
        return None
    schema = ASK_AGENT.input_schema
    agent_property = {
        "type": "string",
        "enum": [slug for slug, _ in offered],
        "description": "The slug of the agent to ask: " + ", ".join(f"{slug} ({name})" for slug, name in offered),
    }
    properties = {**schema["properties"], "agent": agent_property}
    return ToolSpec(ASK_AGENT.name, ASK_AGENT.description, {**schema, "properties": properties})


def _target(*, agent: Agent, user: Any, chain: list[Message], slug: str) -> Agent:
    """The agent to consult, or a ToolError the asking model reads."""
    depth = len(chain) - 1
    if depth >= MAX_DEPTH:
        raise ToolError(
            f"ask_agent: this reply is already a consultation {depth} deep, the most there may be; answer yourself."
        )
    if slug == agent.slug:
        raise ToolError("ask_agent: an agent cannot ask itself; ask another agent or answer yourself.")
    target = agent_get_for_user(user=user, slug=slug)
    if target is None:
        raise ToolError(f"ask_agent: there is no agent {slug!r} that the user may use.")
    if target.pk in _chain_agents(agent, chain):
        raise ToolError(f"ask_agent: {slug} is already in this chain of consultations (it asked, or was asked).")
    return target


def _consultation_create(*, asking: Agent, target: Agent, user: Any, reply: Message, question: str) -> Message:
    """The consultation's session, the question and the consulted agent's queued reply (not yet
    sent to any worker); returns the reply."""
    start = " ".join(question.split())
    title = f"Consulted by {asking.name}: {start[:60]}{'…' if len(start) > 60 else ''}"
    with transaction.atomic():
        session = Session.objects.create(owner=user, agent=target, consulted_by=reply, title=title[:200])
        Participant.objects.create(session=session, agent=target, position=0)
        asked = Message.objects.create(
            session=session, role=Message.Role.USER, content=question,
            turns={"speakers": [target.slug], "policy": "manual"},
        )  # fmt: skip
        return Message.objects.create(
            session=session, role=Message.Role.ASSISTANT, agent=target, reply_to=asked, turn=1,
            status=Message.Status.QUEUED, backend=target.backend,
            model_name=target.model.name if target.model is not None else "",
        )  # fmt: skip


def _this_worker_serves(queue: str, asking: Agent) -> bool:
    """Whether the reply would wait for this very worker: the embedded default (its lane is this
    process), or a Celery worker that consumes ``queue``."""
    return settings.EMBEDDED or _celery_worker_serves(queue, asking)


def _celery_worker_serves(queue: str, asking: Agent) -> bool:
    """Whether this Celery worker consumes ``queue``: the asking agent's own, or another of its ``-Q``."""
    if queue == asking.queue:
        return True
    queues = current_app.amqp.queues
    return queue in set(queues.consume_from or queues)


def _stop(reply_id: int) -> None:
    """Stop the consulted reply, as ``services.reply_stop`` does: a streaming one is flagged (its
    worker ends it at its next poll), a queued one is cancelled here and then."""
    Message.objects.filter(pk=reply_id, status__in=UNFINISHED).update(cancel_requested=True)
    cancelled = Message.objects.filter(pk=reply_id, status=Message.Status.QUEUED).update(
        status=Message.Status.CANCELLED, finished_at=timezone.now()
    )
    if cancelled:
        message = Message.objects.select_related("agent").get(pk=reply_id)
        try:
            broadcast.done_send(message.session_id, message_payload(message))
        except Exception as exc:  # a client reads the stored state later
            log.warning("announcing the stopped consultation %s failed: %s", reply_id, exc)


def _run_here(reply_id: int, cancel: threading.Event, deadline: float) -> bool:
    """Generate the reply in this thread; a watcher stops it on ``cancel`` or at ``deadline``
    (the reply reads its stop flag every ``REPLY_STOP_POLL_MS``). Returns whether it timed out."""
    finished = threading.Event()
    timed_out = threading.Event()

    def watch() -> None:
        try:
            while not finished.wait(POLL_SECONDS):
                if cancel.is_set() or time.monotonic() >= deadline:
                    if not cancel.is_set():
                        timed_out.set()
                    _stop(reply_id)
                    return
        finally:
            connection.close()

    watcher = threading.Thread(target=watch, name=f"ask-agent-{reply_id}", daemon=True)
    watcher.start()
    try:
        task_run(REPLY_GENERATE, {"message_id": reply_id})
    finally:
        finished.set()
        watcher.join()
    return timed_out.is_set()


def _wait_there(reply_id: int, cancel: threading.Event, deadline: float) -> bool:
    """Wait for the reply's worker to end it; stop it on ``cancel`` (ToolCancelled at once) or at
    ``deadline``. Returns whether it timed out."""
    while True:
        status = Message.objects.filter(pk=reply_id).values_list("status", flat=True).first()
        if status is None or status not in UNFINISHED:
            return False
        if cancel.wait(POLL_SECONDS):
            _stop(reply_id)
            raise ToolCancelled("The reply was stopped, and the consultation with it.")
        if time.monotonic() >= deadline:
            _stop(reply_id)
            return True


def ask_agent(*, agent: Agent, user: Any, reply: Message | None, arguments: Any, cancel: threading.Event | None) -> str:
    """Ask the agent ``arguments["agent"]`` the question ``arguments["question"]`` for ``reply``
    (of ``agent``); returns its answer. ToolError (read by the asking model) when it may not be
    asked, does not answer in time, or fails; ToolCancelled when ``reply`` is stopped."""
    arguments = arguments_check(ASK_AGENT, arguments)
    if reply is None:
        raise ToolError("ask_agent: only a reply can consult another agent.")
    question = arguments["question"].strip()
    if not question:
        raise ToolError("ask_agent: the question is empty.")
    target = _target(agent=agent, user=user, chain=consultation_chain(reply), slug=arguments["agent"])
    if len(question) > min(target.max_prompt_chars, settings.MESSAGE_MAX_CHARS):
        raise ToolError(f"ask_agent: the question is longer than {target.slug} accepts ({target.max_prompt_chars}).")
    cancel = cancel or threading.Event()
    timeout = float(settings.ASK_AGENT_TIMEOUT_SECONDS)
    deadline = time.monotonic() + timeout
    consulted = _consultation_create(asking=agent, target=target, user=user, reply=reply, question=question)
    log.info("reply %s (%s) consults %s: reply %s in session %s",
             reply.pk, agent.slug, target.slug, consulted.pk, consulted.session_id)  # fmt: skip
    if _this_worker_serves(target.queue, agent):
        timed_out = _run_here(consulted.pk, cancel, deadline)
    else:
        try:
            current_app.send_task(REPLY_GENERATE, kwargs={"message_id": consulted.pk}, queue=target.queue)
        except Exception as exc:  # the broker is away: nothing would ever run the reply
            Message.objects.filter(pk=consulted.pk, status=Message.Status.QUEUED).update(
                status=Message.Status.FAILED, error=f"The reply could not be queued: {exc}", finished_at=timezone.now()
            )
            raise ToolError(f"ask_agent: {target.slug}'s worker could not be reached: {exc}") from exc
        timed_out = _wait_there(consulted.pk, cancel, deadline)
    if cancel.is_set():
        raise ToolCancelled("The reply was stopped, and the consultation with it.")
    answer = Message.objects.filter(pk=consulted.pk).values("status", "content", "error").first()
    if answer is None:
        raise ToolError(f"ask_agent: the consultation with {target.slug} was deleted before it answered.")
    if answer["status"] == Message.Status.COMPLETE:
        return str(answer["content"])
    if timed_out:
        raise ToolError(f"ask_agent: {target.slug} did not answer within {timeout:g} s (ASK_AGENT_TIMEOUT_SECONDS).")
    if answer["status"] == Message.Status.CANCELLED:
        raise ToolError(f"ask_agent: the consultation with {target.slug} was stopped before it answered.")
    why = answer["error"] or "no reason given"
    raise ToolError(f"ask_agent: {target.slug} could not answer ({answer['status']}): {why}")
