"""A synchronous client for MCP tool servers, over the official ``mcp`` SDK (2.x).

Two calls, each a short session of its own: ``discover`` (initialize, then list the tools) and
``call`` (initialize, then call one tool). A session per call costs a process start for a stdio
server (about a second for a Python server on the SDK here, more for ``npx``), and buys robustness: nothing is
shared between calls, so a hung or crashed server harms one call only, and a stopped call ends its
process with it. A worker keeps no connection to reuse, nor any state to clean up.

What a caller can rely on:

- Every failure is a ``ToolError`` whose message says what went wrong, for the person who set the
  server up and for the model: a command that is not found, a process that exited (with the end of
  what it wrote to stderr), a connection refused, an HTTP status, a tool that reported an error
  (its own text), a call that ran past its timeout (naming it).
- ``cancel`` (a ``threading.Event``, set when the reply is stopped) abandons the call within about
  a second: MCP's ``notifications/cancelled`` goes to the server, a stdio server's process group is
  ended, and ``ToolCancelled`` is raised.
- A stdio server starts with an allowlisted environment: ``INHERITED_ENV`` from the worker's own
  environment and the server's ``env``, nothing else, so the platform's secrets (``SECRET_KEY``,
  ``DATABASE_URL``, API keys) never reach it. It runs in a process group of its own, ended when
  the call ends.
- HTTP servers: the outbound host policy lives in ``inference.outbound``, which reads Django's
  settings; this module stays free of Django, so the caller passes ``url_check`` (the agents layer
  passes ``agents.tool_servers.tool_server_url_check``), called before any connection is opened.
  It checks the name's addresses then; the connection itself is not pinned to them (httpx2 is not
  wired to ``inference.outbound``'s guarded connections).
- Cost: a stdio server starts for every call (about a second for a Python server on the SDK), and
  the call returns once it has exited (a few tenths of a second after its stdin closes).

The SDK pieces used: ``mcp.ClientSession`` (``initialize``, ``list_tools``, ``call_tool``) over
``mcp.client.streamable_http.streamable_http_client`` for HTTP, and over a stdio transport of our
own (the SDK's ``stdio_client`` adds its own inherited variables and waits seconds for a hung
server to exit; ours spawns with exactly the allowlisted environment and ends the group at once).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import signal
import tempfile
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import IO, Any, TypeVar

import anyio
import httpx2
import mcp_types
from anyio.abc import Process
from anyio.streams.text import TextReceiveStream
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.shared.message import SessionMessage

from inference.tools.base import ServerSpec, ToolCancelled, ToolError, ToolSpec

__all__ = ["INHERITED_ENV", "ServerSpec", "call", "discover", "server_environment"]

# The only variables a stdio server gets from the worker's environment; its own ``env`` adds to them.
INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "PYTHONPATH")
# How often a running call looks at its cancel event.
CANCEL_POLL_S = 0.05
# After a clean session a stdio server has this long to exit once its stdin closes, then it is ended.
EXIT_GRACE_S = 1.0
# Between SIGTERM and SIGKILL when a stdio server is ended.
TERM_GRACE_S = 0.3
# Beyond the start and call timeouts, the most a session's close may take before it is abandoned.
BACKSTOP_S = 5.0
# The end of a stdio server's stderr quoted in an error.
STDERR_TAIL = 800

T = TypeVar("T")
UrlCheck = Callable[[str], None]


def server_environment(spec: ServerSpec) -> dict[str, str]:
    """The environment a stdio server starts with: the allowlisted variables, then its own ``env``."""
    env = {key: os.environ[key] for key in INHERITED_ENV if key in os.environ}
    env.update({str(key): str(value) for key, value in spec.env.items()})
    return env


def discover(spec: ServerSpec, *, url_check: UrlCheck | None = None) -> list[ToolSpec]:
    """The server's tools, named as the server names them; the start and the listing each within ``spec.timeout``."""

    async def body(session: ClientSession) -> list[ToolSpec]:
        tools: list[ToolSpec] = []
        cursor: str | None = None
        while True:
            params = mcp_types.PaginatedRequestParams(cursor=cursor) if cursor else None
            listing = await session.list_tools(params=params)
            for tool in listing.tools:
                schema = dict(tool.input_schema or {}) or {"type": "object", "properties": {}}
                tools.append(ToolSpec(name=tool.name, description=tool.description or "", input_schema=schema))
            cursor = listing.next_cursor
            if not cursor:
                return tools

    return _run(spec, body, what="listing its tools", timeout=spec.timeout, cancel=None, url_check=url_check)


def call(
    spec: ServerSpec,
    tool: str,
    arguments: dict[str, Any],
    *,
    timeout: float,
    cancel: threading.Event | None = None,
    url_check: UrlCheck | None = None,
) -> str:
    """Call ``tool`` with ``arguments``; the text of its result's content, joined by newlines.

    ``timeout`` bounds the tool's answer; the server's start and handshake have ``spec.timeout``
    of their own (a stdio server may take a second or more to start). Raises ``ToolError`` (a
    result marked ``isError`` gives its own text), ``ToolCancelled`` once ``cancel`` is set."""

    async def body(session: ClientSession) -> str:
        result = await session.call_tool(tool, arguments)
        text = _content_text(result)
        if result.is_error:
            raise ToolError(text or f"The tool {tool!r} reported an error and said nothing more.")
        return text

    return _run(spec, body, what=f"calling {tool!r}", timeout=timeout, cancel=cancel, url_check=url_check)


def _content_text(result: mcp_types.CallToolResult) -> str:
    parts: list[str] = []
    for block in result.content:
        if isinstance(block, mcp_types.TextContent):
            parts.append(block.text)
        else:  # an image, audio or a resource: the model reads text only
            parts.append(f"[{getattr(block, 'type', 'content')} content left out]")
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False))
    return "\n".join(parts)


# --- Running a session from synchronous code --------------------------------------------------


def _run(
    spec: ServerSpec,
    body: Callable[[ClientSession], Awaitable[T]],
    *,
    what: str,
    timeout: float,
    cancel: threading.Event | None,
    url_check: UrlCheck | None,
) -> T:
    if spec.transport == "http":
        if not spec.url:
            raise ToolError(f"Tool server {spec.name!r} has no URL.")
        if url_check is not None:
            try:
                url_check(spec.url)
            except Exception as exc:
                raise ToolError(f"Tool server {spec.name!r}: {exc}") from None
    elif spec.transport == "stdio":
        if not spec.command:
            raise ToolError(f"Tool server {spec.name!r} has no command.")
    else:
        raise ToolError(f"Tool server {spec.name!r}: unknown transport {spec.transport!r}.")

    def go() -> T:
        return anyio.run(_bounded, spec, body, what, timeout, cancel)

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return go()
    # Called from async code (a test, a consumer): the session gets an event loop of its own.
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mcp-call") as pool:
        return pool.submit(go).result()


async def _bounded(
    spec: ServerSpec,
    body: Callable[[ClientSession], Awaitable[T]],
    what: str,
    timeout: float,
    cancel: threading.Event | None,
) -> T:
    """``body`` in a session to ``spec``, ended by ``cancel``, errors made ToolErrors.

    Starting the server and its ``initialize`` answer are bounded by ``spec.timeout``, ``body``
    by ``timeout`` (see ``_in_session``); the deadline here is a backstop for a close that hangs."""
    outcome: list[T] = []
    failure: BaseException | None = None
    async with anyio.create_task_group() as group:
        if cancel is not None:
            group.start_soon(_watch, cancel, group.cancel_scope)
        with anyio.move_on_after(spec.timeout + timeout + BACKSTOP_S) as deadline:
            try:
                outcome.append(await _in_session(spec, body, what, timeout))
            except Exception as exc:
                failure = exc
        group.cancel_scope.cancel()
    if outcome:
        return outcome[0]
    if cancel is not None and cancel.is_set():
        raise ToolCancelled(f"Stopped while {what} on tool server {spec.name!r}.")
    if deadline.cancelled_caught:
        raise ToolError(f"Tool server {spec.name!r} did not finish {what} within {spec.timeout + timeout:g} s.")
    raise _tool_error(spec, failure, what) from None


async def _watch(cancel: threading.Event, scope: anyio.CancelScope) -> None:
    while not cancel.is_set():
        await anyio.sleep(CANCEL_POLL_S)
    scope.cancel()


async def _in_session(spec: ServerSpec, body: Callable[[ClientSession], Awaitable[T]], what: str, timeout: float) -> T:
    async def converse(session: ClientSession) -> T:
        with anyio.move_on_after(spec.timeout) as starting:
            await session.initialize()
        if starting.cancelled_caught:
            raise ToolError(f"Tool server {spec.name!r} did not answer within {spec.timeout:g} s of starting.")
        with anyio.move_on_after(timeout) as running:
            return await body(session)
        assert running.cancelled_caught
        raise ToolError(f"Tool server {spec.name!r} timed out after {timeout:g} s while {what}.")

    if spec.transport == "http":
        # The SDK turns an HTTP error status into a JSON-RPC error that no longer names it
        # ("Server returned an error response"); the status is what a person needs to see.
        failed: list[int] = []

        async def note_status(response: httpx2.Response) -> None:
            if response.status_code >= 400:
                failed.append(response.status_code)

        headers = {str(k): str(v) for k, v in spec.headers.items()}
        try:
            async with httpx2.AsyncClient(
                headers=headers, timeout=httpx2.Timeout(spec.timeout), event_hooks={"response": [note_status]}
            ) as client:
                async with streamable_http_client(spec.url, http_client=client) as (read, write):
                    async with ClientSession(read, write) as session:
                        return await converse(session)
        except Exception as exc:
            if failed:
                exc.__dict__.setdefault("mcp_http_status", failed[0])
            raise
    with tempfile.TemporaryFile(mode="w+b") as stderr:
        try:
            async with _stdio_streams(spec, stderr) as (read, write, process):
                try:
                    async with ClientSession(read, write) as session:
                        return await converse(session)
                except Exception as exc:
                    if any(isinstance(leaf, ToolError) for leaf in _leaves(exc)):
                        raise
                    exited = await _exit_code(process)
                    if exited is not None:
                        raise ToolError(
                            f"Tool server {spec.name!r} exited with code {exited} while {what}" + _stderr_tail(stderr)
                        ) from exc
                    raise
        except Exception as exc:
            # Kept on the exception for _tool_error: the file is gone once this block ends.
            exc.__dict__.setdefault("mcp_stderr", _stderr_tail(stderr))
            raise


# --- A stdio transport with the allowlisted environment and a prompt end -----------------------


@asynccontextmanager
async def _stdio_streams(spec: ServerSpec, stderr: IO[bytes]) -> AsyncIterator[tuple[Any, Any, Process]]:
    """The server's process, with the SDK's message streams over its stdin and stdout.

    Newline-delimited JSON-RPC, as the SDK's own ``stdio_client``. On leaving, however it is left
    (a cancel included), the process group is ended: after ``EXIT_GRACE_S`` when the session ended
    cleanly, at once otherwise."""
    try:
        process = await anyio.open_process(
            spec.command, env=server_environment(spec), stderr=stderr, start_new_session=True
        )
    except FileNotFoundError:
        raise ToolError(
            f"Tool server {spec.name!r}: the command {spec.command[0]!r} was not found "
            "(on the worker's PATH, or at that path)."
        ) from None
    except PermissionError:
        raise ToolError(f"Tool server {spec.name!r}: the command {spec.command[0]!r} may not be run.") from None
    except OSError as exc:
        raise ToolError(f"Tool server {spec.name!r}: cannot start {spec.command[0]!r}: {exc}.") from None

    read_writer, read_stream = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    write_stream, write_reader = anyio.create_memory_object_stream[SessionMessage](0)

    async def from_stdout() -> None:
        assert process.stdout is not None
        with suppress(anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream, OSError):
            async with read_writer:
                buffer = ""
                async for chunk in TextReceiveStream(process.stdout, errors="replace"):
                    lines = (buffer + chunk).split("\n")
                    buffer = lines.pop()
                    for line in lines:
                        if not line.strip():
                            continue
                        try:
                            message = mcp_types.jsonrpc_message_adapter.validate_json(line, by_name=False)
                        except ValueError as exc:
                            await read_writer.send(exc)
                            continue
                        await read_writer.send(SessionMessage(message))

    async def to_stdin() -> None:
        assert process.stdin is not None
        with suppress(anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
            async with write_reader:
                async for outgoing in write_reader:
                    line = outgoing.message.model_dump_json(by_alias=True, exclude_unset=True) + "\n"
                    await process.stdin.send(line.encode())
        # The server is gone or the session is over: the session must not wait on it.
        await read_writer.aclose()

    clean = False
    try:
        async with anyio.create_task_group() as pumps:
            pumps.start_soon(from_stdout)
            pumps.start_soon(to_stdin)
            try:
                yield read_stream, write_stream, process
                clean = True
            finally:
                pumps.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await _end_process(process, grace=EXIT_GRACE_S if clean else 0.0)
            for stream in (read_stream, write_stream, read_writer, write_reader):
                await stream.aclose()


async def _end_process(process: Process, *, grace: float) -> None:
    """Close stdin; after ``grace``, SIGTERM the group, then SIGKILL it; reap the process."""
    if process.stdin is not None:
        with suppress(Exception):
            await process.stdin.aclose()
    if await _exited_within(process, grace):
        _signal_group(process, signal.SIGKILL)  # children it left behind
    else:
        _signal_group(process, signal.SIGTERM)
        if not await _exited_within(process, TERM_GRACE_S):
            _signal_group(process, signal.SIGKILL)
            await _exited_within(process, 2.0)
    with anyio.move_on_after(1.0), suppress(Exception):
        await process.aclose()


def _signal_group(process: Process, sig: signal.Signals) -> None:
    # The server was started in a session of its own: its pid is its group's id.
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


async def _exited_within(process: Process, seconds: float) -> bool:
    # Polled, not process.wait(): that also waits for the pipes to close, which a child may hold.
    deadline = anyio.current_time() + seconds
    while process.returncode is None:
        if anyio.current_time() >= deadline:
            return False
        await anyio.sleep(0.01)
    return True


async def _exit_code(process: Process) -> int | None:
    """The exit code when the process has ended or ends within a moment; None while it runs."""
    await _exited_within(process, 0.5)
    return process.returncode


def _stderr_tail(stderr: IO[bytes]) -> str:
    try:
        stderr.flush()
        stderr.seek(0, os.SEEK_END)
        size = stderr.tell()
        stderr.seek(max(0, size - STDERR_TAIL))
        tail = stderr.read().decode(errors="replace").strip()
    except (OSError, ValueError):
        return ""
    return f". Its stderr ended with:\n{tail}" if tail else ". It wrote nothing to stderr."


# --- Errors ---------------------------------------------------------------------------------------


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _tool_error(spec: ServerSpec, failure: BaseException | None, what: str) -> ToolError:
    """The clearest message among the causes of ``failure`` (task groups wrap them in groups)."""
    if failure is None:
        return ToolError(f"Tool server {spec.name!r} gave no answer while {what}.")
    leaves = _leaves(failure)
    for leaf in leaves:
        if isinstance(leaf, ToolError):
            return leaf
    for leaf in leaves:
        if isinstance(leaf, httpx2.HTTPStatusError):
            return ToolError(
                f"Tool server {spec.name!r} answered HTTP {leaf.response.status_code} at {spec.url} while {what}."
            )
        if isinstance(leaf, httpx2.ConnectError):
            return ToolError(f"Tool server {spec.name!r}: cannot connect to {spec.url} ({leaf}).")
        if isinstance(leaf, httpx2.TimeoutException):
            return ToolError(f"Tool server {spec.name!r}: {spec.url} did not answer in time while {what}.")
        if isinstance(leaf, httpx2.HTTPError):
            return ToolError(f"Tool server {spec.name!r}: HTTP error at {spec.url} while {what}: {leaf}.")
    status = failure.__dict__.get("mcp_http_status")
    if status is not None:
        return ToolError(f"Tool server {spec.name!r} answered HTTP {status} at {spec.url} while {what}.")
    for leaf in leaves:
        if isinstance(leaf, MCPError):
            stderr = str(failure.__dict__.get("mcp_stderr", ""))
            return ToolError(f"Tool server {spec.name!r} failed while {what}: {leaf.message}{stderr}")
    leaf = leaves[0]
    return ToolError(f"Tool server {spec.name!r} failed while {what}: {type(leaf).__name__}: {leaf}")
