"""The terminal chat behind ``manage.py chat``: a thin door like the websocket consumer.

It writes through ``sessions_app.services`` and hears the reply through the one reply follower
(``sessions_app.follow``), so it works in the embedded default (the reply runs in this process's
thread pool and sends into this loop) and in the distributed set-up (Redis channel layer, the
reply on a Celery worker) alike, and a lost event never leaves it waiting.

Everything waits on one inbox: lines read from stdin (one at a time, in a thread, only when the
prompt asks) and Ctrl+C, which arrives through the loop's own SIGINT handler in every state. So
Ctrl+C never lands as a KeyboardInterrupt in some random place: while a reply streams it stops
the reply, at the prompt it prints a hint. Channel-layer events go to their own queue, which the
follower reads.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import threading
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import BaseChannelLayer, get_channel_layer
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import CommandError
from django.db import DatabaseError

from agents.models import Agent
from sessions_app import broadcast, services
from sessions_app.follow import session_follow
from sessions_app.models import Message, Session
from sessions_app.selectors import message_list, message_states, session_get_for_user
from sessions_app.terminal_style import Palette, stats_line
from sessions_app.unavailable import BrokerUnavailable

log = logging.getLogger(__name__)

LOCAL_USERNAME = "terminal"
HINT = "(Ctrl+C stops a reply while it streams; type exit or press Ctrl+D to quit)"
# Distributed set-up: say so when no worker has picked the reply up after this long.
QUEUED_NOTICE_SECONDS = 15.0

_LINE, _INTERRUPT = "line", "interrupt"


def tool_outcome(call: dict[str, Any]) -> str:
    """A finished tool call in one line: its result (or error), cut, and how long it took."""
    text = call["result"] if call["status"] == "ok" else f"{call['status']}: {call['error']}"
    text = " ".join(text.split())
    return f"→ {text[:200] + '…' if len(text) > 200 else text} ({call['duration_ms']} ms)"


class TerminalChat:
    def __init__(
        self,
        *,
        out: Any,
        palette: Palette,
        tty: bool,
        agent_slug: str | None,
        username: str | None,
        session_id: str | None,
    ) -> None:
        self.out = out
        self.palette = palette
        self.tty = tty
        self.agent_slug = agent_slug
        self.username = username
        self.session_id = session_id
        self.inbox: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.user: Any = None
        self.agent: Agent | None = None
        self.session: Session | None = None
        self.layer: BaseChannelLayer | None = None
        self.channel = ""
        self.reading = False  # a stdin thread is blocked on a line for us
        # Replies asked to stop that we no longer wait for, with their session.
        self.abandoned: dict[int, Session] = {}

    # --- output ----------------------------------------------------------------------------

    def write(self, text: str) -> None:
        self.out.write(text, ending="")
        self.out.flush()

    def notice(self, text: str) -> None:
        self.write(self.palette.paint("2", text) + "\n")

    def error(self, text: str) -> None:
        self.write(self.palette.paint("31", text) + "\n")

    def agent_prompt(self, slug: str) -> str:
        return self.palette.paint("1;36", f"{slug}> ")

    # --- the conversation --------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, self.inbox.put_nowait, (_INTERRUPT, None))
        # The embedded default's reply threads hand their channel-layer sends to this loop.
        broadcast.loop_register(loop)
        receiver: asyncio.Task[None] | None = None
        try:
            try:
                await sync_to_async(self._setup)()
            except DatabaseError as exc:
                raise CommandError(f"The database is not ready ({exc}): run `manage.py migrate`.") from None
            self.layer = get_channel_layer()
            if self.layer is None:
                raise CommandError("CHANNEL_LAYERS: no channel layer is configured, so replies cannot be heard.")
            self.channel = await self.layer.new_channel()
            receiver = asyncio.create_task(self._receive())
            await self.layer.group_add(self._session().group_name, self.channel)
            await self._greet()
            while True:
                line = await self._prompt()
                if line is None:
                    self.write("\n")
                    break
                command = line.strip()
                if command in ("exit", "quit"):
                    break
                if command == "clear":
                    await self._clear()
                elif command:
                    await self._turn(line)
        finally:
            await self._settle()
            if receiver is not None:
                receiver.cancel()
            await self._leave()
            loop.remove_signal_handler(signal.SIGINT)

    def _setup(self) -> None:
        self.user = self._user()
        session = None
        if self.session_id is not None:
            session = session_get_for_user(user=self.user, session_id=self.session_id)
            if session is None:
                raise CommandError(f"No session {self.session_id} of user {self.user.username!r}.")
        slug = self.agent_slug
        if slug is None and session is not None and session.agent is not None:
            slug = session.agent.slug
        try:
            self.agent = services.agent_check_usable(user=self.user, slug=slug or settings.DEFAULT_AGENT_SLUG)
        except services.ChatError as exc:
            raise CommandError(f"{exc.message} Create one with `manage.py bootstrap` or in the admin.") from None
        self.session = session or services.session_create(owner=self.user, agent=self.agent)

    def _user(self) -> Any:
        User = get_user_model()
        if self.username:
            user = User.objects.filter(username=self.username).first()
            if user is None:
                raise CommandError(f"No user named {self.username!r}.")
            return user
        user = User.objects.filter(is_superuser=True, is_active=True).order_by("pk").first()
        if user is not None:
            return user
        user, made = User.objects.get_or_create(username=LOCAL_USERNAME)
        if made:
            user.set_unusable_password()
            user.save(update_fields=["password"])
            self.notice(f"No superuser and no --user: created the local user {LOCAL_USERNAME!r}.")
        return user

    def _session(self) -> Session:
        assert self.session is not None
        return self.session

    def _agent(self) -> Agent:
        assert self.agent is not None
        return self.agent

    async def _greet(self) -> None:
        agent, session = self._agent(), self._session()
        self.notice(
            f"Chatting with {agent.name} ({agent.slug}) as {self.user.username}, "
            f"session {session.pk}. Ctrl+C stops a reply, `clear` starts a new session, "
            "`exit` or Ctrl+D quits."
        )
        history = await sync_to_async(lambda: list(message_list(session=session)))()
        for message in history:
            if message.role == Message.Role.USER:
                self.write(self.palette.paint("1;32", "you> ") + message.content + "\n")
            elif message.role == Message.Role.ASSISTANT:
                slug = message.agent.slug if message.agent else "agent"
                self.write(self.agent_prompt(slug) + message.content + "\n")
                if message.status != Message.Status.COMPLETE:
                    self.notice(f"[{message.status}]")

    async def _prompt(self) -> str | None:
        """The next line from stdin, or None at end of input; Ctrl+C here only prints a hint."""
        prompt = self.palette.prompt("1;32", "you> ")
        if not self.tty:
            self.write(prompt)
        if not self.reading:
            self.reading = True
            loop = asyncio.get_running_loop()
            threading.Thread(target=self._read_line, args=(loop, prompt), name="chat-stdin", daemon=True).start()
        while True:
            kind, value = await self.inbox.get()
            if kind == _LINE:
                self.reading = False
                if value is not None and not self.tty:
                    self.write(value + "\n")  # piped input is not echoed by a terminal
                return value
            if kind == _INTERRUPT:
                self.write("\n")
                self.notice(HINT)
                self.write(self.palette.paint("1;32", "you> ") + self._typed_so_far())

    def _typed_so_far(self) -> str:
        """What readline holds of the line being typed: Ctrl+C does not clear it, so show it."""
        if not self.tty or "readline" not in sys.modules:
            return ""
        try:
            return str(sys.modules["readline"].get_line_buffer())
        except Exception:
            return ""

    def _read_line(self, loop: asyncio.AbstractEventLoop, prompt: str) -> None:
        line: str | None
        try:
            if self.tty:
                line = input(prompt)
            else:
                raw = sys.stdin.readline()
                line = raw.rstrip("\r\n") if raw else None
        except EOFError:
            line = None
        except (OSError, UnicodeDecodeError) as exc:
            loop.call_soon_threadsafe(self.error, f"error: cannot read the terminal: {exc}")
            line = None
        loop.call_soon_threadsafe(self.inbox.put_nowait, (_LINE, line))

    async def _clear(self) -> None:
        old = self._session()
        try:
            self.session = await sync_to_async(services.session_create)(owner=self.user, agent=self._agent())
        except DatabaseError as exc:
            self.error(f"error: could not start a new session: {exc}")
            return
        assert self.layer is not None
        await self.layer.group_discard(old.group_name, self.channel)
        await self.layer.group_add(self.session.group_name, self.channel)
        self.notice(f"New session {self.session.pk}.")

    async def _turn(self, content: str) -> None:
        session = self._session()
        assert self.layer is not None
        # Joining again renews the membership, which a channel layer expires after a day.
        await self.layer.group_add(session.group_name, self.channel)
        while not self.events.empty():  # events of earlier replies, heard at the prompt
            self.events.get_nowait()
        try:
            _, reply = await sync_to_async(services.message_send)(session=session, content=content, agent=self._agent())
        except services.ChatError as exc:
            self.error(f"error: {exc.message}")
            return
        except BrokerUnavailable as exc:
            self.error(f"error: {exc.message}")
            return
        except DatabaseError as exc:
            self.error(f"error: the message was not sent: {exc}")
            return
        assert reply is not None  # the terminal names its agent: it answers
        self.write(self.agent_prompt(self._agent().slug))
        await self._follow(reply.pk)

    async def _follow(self, reply_id: int) -> None:
        """Print the reply as it streams, until it is done; Ctrl+C asks it to stop."""
        loop = asyncio.get_running_loop()
        follower = session_follow(session=self._session(), reply_id=reply_id, receive=self.events.get)
        queued_since = loop.time()
        stopping = False
        shown: dict[str, str] = {}  # each call printed so far: "tool_call" (started) or "tool_result"
        next_event: asyncio.Future[dict[str, Any]] = asyncio.ensure_future(follower.__anext__())
        next_input: asyncio.Future[tuple[str, Any]] = asyncio.ensure_future(self.inbox.get())
        try:
            while True:
                waiting: set[asyncio.Future[Any]] = {next_event, next_input}
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if next_input.done():
                    kind, _ = next_input.result()
                    next_input = asyncio.ensure_future(self.inbox.get())
                    if kind != _INTERRUPT:
                        continue
                    if stopping:
                        self.write("\n")
                        self.notice("[no longer waiting: the reply ends in the background]")
                        self.abandoned[reply_id] = self._session()
                        return
                    stopping = True
                    try:
                        await sync_to_async(services.reply_stop)(session=self._session(), message_id=reply_id)
                    except DatabaseError as exc:
                        self.write("\n")
                        self.error(f"error: could not stop the reply: {exc}")
                    continue  # its done follows: `cancelled`, or `complete` if it had just ended
                if not next_event.done():
                    continue
                try:
                    event = next_event.result()
                except StopAsyncIteration:
                    return
                next_event = asyncio.ensure_future(follower.__anext__())
                kind = event["type"]
                if kind == "session" and event["messages"]:
                    first = event["messages"][0]
                    if first.get("reasoning"):
                        self.write(self.palette.paint("2", first["reasoning"]))
                    # Joined late (or the reply was quick): the calls it made so far, then its text.
                    for call in first.get("tool_calls") or []:
                        self._tool_show(shown, "tool_call", call)
                        if call["status"] != "running":
                            self._tool_show(shown, "tool_result", call)
                    self.write(first["content"])
                elif kind == "delta":
                    # A reasoning model's thinking, dimmed, before its answer.
                    reasoning = event.get("part") == "reasoning"
                    self.write(self.palette.paint("2", event["text"]) if reasoning else event["text"])
                elif kind in ("tool_call", "tool_result"):
                    self._tool_show(shown, kind, event["call"])
                elif kind == "done":
                    self._finish(event["message"])
                    return
                elif kind == "deleted":
                    self._finish(None)
                    return
                elif kind == "message" and event["message"]["status"] == Message.Status.STREAMING:
                    queued_since = float("inf")
                elif kind == "idle" and self._still_queued(event, reply_id, loop.time() - queued_since):
                    queued_since = float("inf")  # say it once
                    self.write("\n")
                    self.notice(f"(still queued: is a worker consuming the queue {self._agent().queue!r}?)")
                    self.write(self.agent_prompt(self._agent().slug))
        finally:
            for pending in (next_event, next_input):
                pending.cancel()
            # The follower can be closed only once its cancelled step has unwound (else aclose()
            # raises "asynchronous generator is already running" over the real reason).
            await asyncio.gather(next_event, next_input, return_exceptions=True)
            await follower.aclose()

    @staticmethod
    def _still_queued(event: dict[str, Any], reply_id: int, waited: float) -> bool:
        return (
            not settings.EMBEDDED
            and event["states"].get(reply_id) == Message.Status.QUEUED
            and waited >= QUEUED_NOTICE_SECONDS
        )

    async def _settle(self, timeout: float = 10.0) -> None:
        """In the embedded default the replies run in this process: let stopped ones end first.

        Otherwise one would go on through the interpreter's shutdown, its sends failing.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while settings.EMBEDDED and self.abandoned and loop.time() < deadline:
            for reply_id, session in list(self.abandoned.items()):
                message = await self._reply_state(reply_id, session)
                if message is None or message["status"] in Message.FINAL_STATUSES:
                    del self.abandoned[reply_id]
            await asyncio.sleep(0.2)

    async def _reply_state(self, reply_id: int, session: Session) -> dict[str, Any] | None:
        try:
            states = await sync_to_async(message_states)(session_id=session.pk, message_ids=[reply_id])
            return states.get(reply_id)
        except DatabaseError as exc:
            self.write("\n")
            self.error(f"error: cannot read the reply's state: {exc}")
            return {"status": Message.Status.QUEUED}

    def _tool_show(self, shown: dict[str, str], kind: str, call: dict[str, Any]) -> None:
        """Print a call's start, ``[name(arguments) …``, or its end, `` → result (N ms)]``, once
        each, whether it comes from the stored reply or from its event."""
        before = shown.get(call["id"])
        if before == "tool_result" or (kind == "tool_call" and before is not None):
            return
        if before is None:
            self.write(self.palette.paint("2", f"[{call['name']}({call['arguments']}) …"))
        if kind == "tool_result":
            self.write(self.palette.paint("2", f" {tool_outcome(call)}]\n"))
        shown[call["id"]] = kind

    def _finish(self, message: dict[str, Any] | None) -> None:
        if message is None:
            self.write("\n")
            self.error("error: the reply is gone (was the session deleted?)")
            return
        self.write("\n")
        status = message["status"]
        if status == Message.Status.CANCELLED:
            self.notice("[stopped]")
        elif status == Message.Status.FAILED:
            self.error(f"error: {message.get('error') or 'the reply failed.'}")
        elif status == Message.Status.INTERRUPTED:
            self.error(f"[interrupted] {message.get('error') or ''}".rstrip())
        stats = stats_line(message.get("stats") or {})
        if stats:
            self.notice(stats)

    async def _receive(self) -> None:
        assert self.layer is not None
        while True:
            try:
                event = await self.layer.receive(self.channel)
            except Exception as exc:  # Redis away: the follower's database checks carry on
                log.warning("channel layer receive failed: %s", exc)
                await asyncio.sleep(1)
                continue
            self.events.put_nowait(event)

    async def _leave(self) -> None:
        if self.layer is None or not self.channel or self.session is None:
            return
        try:
            await self.layer.group_discard(self.session.group_name, self.channel)
            close_pools = getattr(self.layer, "close_pools", None)
            if close_pools is not None:
                await close_pools()
        except Exception as exc:
            log.warning("leaving the channel layer failed: %s", exc)
