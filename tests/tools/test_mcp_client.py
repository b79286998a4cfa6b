"""The MCP client against a real server (tests.tools.mcp_server, the official SDK), over stdio and
streamable HTTP: discovery, calls, a tool's error, servers that cannot start or answer, timeouts
and stops that end the call (and a stdio server's process) promptly, and the allowlisted
environment of a stdio server."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from inference.tools.base import ToolCancelled, ToolError
from inference.tools.mcp import ServerSpec, call, discover

ROOT = Path(__file__).resolve().parents[2]
SERVER = [sys.executable, "-m", "tests.tools.mcp_server"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stdio_spec(**env: str) -> ServerSpec:
    return ServerSpec(name="testing", command=[*SERVER, "stdio"], env={"PYTHONPATH": str(ROOT), **env}, timeout=30)


def stdio_servers_running() -> list[psutil.Process]:
    """The stdio test servers this test process started that still run."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE and child.cmdline()[-2:] == ["tests.tools.mcp_server", "stdio"]:
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


@pytest.fixture(scope="module")
def http_url() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen([*SERVER, "http", str(port)], cwd=ROOT, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert process.poll() is None, "the HTTP test server exited"
                assert time.monotonic() < deadline, "the HTTP test server did not start"
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()  # uvicorn waits for a sleep a test left running: not this long
        try:
            process.wait(2)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@pytest.fixture(params=["stdio", "http"])
def spec(request: pytest.FixtureRequest) -> ServerSpec:
    if request.param == "stdio":
        return stdio_spec()
    return ServerSpec(name="testing", transport="http", url=request.getfixturevalue("http_url"), timeout=30)


def test_discovery_lists_the_servers_tools_with_their_schemas(spec: ServerSpec) -> None:
    tools = {tool.name: tool for tool in discover(spec)}
    assert set(tools) == {"add", "echo", "sleep", "block", "fail", "env_leak"}
    add = tools["add"]
    assert add.description == "Add two integers."
    assert add.input_schema["properties"]["a"]["type"] == "integer"
    assert sorted(add.input_schema["required"]) == ["a", "b"]
    assert tools["echo"].input_schema["properties"]["text"]["type"] == "string"


def test_a_call_returns_the_text_of_the_tools_result(spec: ServerSpec) -> None:
    assert call(spec, "add", {"a": 2, "b": 3}, timeout=30) == "5"
    assert call(spec, "echo", {"text": "héllo, wörld"}, timeout=30) == "héllo, wörld"


def test_a_tool_that_fails_gives_a_tool_error_with_its_message(spec: ServerSpec) -> None:
    with pytest.raises(ToolError, match="the disk is full") as caught:
        call(spec, "fail", {"message": "the disk is full"}, timeout=30)
    assert not isinstance(caught.value, ToolCancelled)


def test_a_call_from_async_code_runs_on_a_loop_of_its_own(spec: ServerSpec) -> None:
    async def from_a_coroutine() -> str:
        return call(spec, "add", {"a": 20, "b": 22}, timeout=30)

    assert asyncio.run(from_a_coroutine()) == "42"


def test_a_command_that_does_not_exist_is_named_in_the_error() -> None:
    spec = ServerSpec(name="missing", command=["no-such-mcp-server-anywhere", "--stdio"], timeout=10)
    with pytest.raises(ToolError, match="'no-such-mcp-server-anywhere' was not found"):
        discover(spec)


def test_a_server_that_exits_shows_its_exit_code_and_the_end_of_its_stderr() -> None:
    script = "import sys; print('config file /etc/x.toml is missing', file=sys.stderr); sys.exit(3)"
    spec = ServerSpec(name="broken", command=[sys.executable, "-c", script], timeout=10)
    with pytest.raises(ToolError) as caught:
        discover(spec)
    assert "exited with code 3" in str(caught.value)
    assert "config file /etc/x.toml is missing" in str(caught.value)


def test_a_refused_connection_is_said_plainly() -> None:
    url = f"http://127.0.0.1:{free_port()}/mcp"
    with pytest.raises(ToolError, match="cannot connect to " + url):
        discover(ServerSpec(name="away", transport="http", url=url, timeout=10))


def test_an_http_error_status_is_named(http_url: str) -> None:
    url = http_url.replace("/mcp", "/not-mcp")
    with pytest.raises(ToolError, match="answered HTTP 404"):
        discover(ServerSpec(name="wrong", transport="http", url=url, timeout=10))


def test_the_outbound_check_runs_before_any_connection(http_url: str) -> None:
    def refuse(url: str) -> None:
        raise ValueError(f"{url} is not allowed")

    with pytest.raises(ToolError, match="is not allowed"):
        discover(ServerSpec(name="checked", transport="http", url=http_url, timeout=10), url_check=refuse)


def test_a_call_past_its_timeout_ends_promptly_and_leaves_no_process(spec: ServerSpec) -> None:
    started = time.monotonic()
    call(spec, "echo", {"text": "warm"}, timeout=30)
    one_call = time.monotonic() - started  # a stdio server's start is part of every call

    started = time.monotonic()
    with pytest.raises(ToolError, match="timed out after 0.5 s") as caught:
        call(spec, "sleep", {"seconds": 10}, timeout=0.5)
    assert time.monotonic() - started < one_call + 2.0
    assert not isinstance(caught.value, ToolCancelled)
    assert stdio_servers_running() == []


def test_a_stop_during_a_call_ends_it_within_two_seconds(spec: ServerSpec) -> None:
    started = time.monotonic()
    call(spec, "echo", {"text": "warm"}, timeout=30)
    one_call = time.monotonic() - started

    cancel = threading.Event()
    stop_at: list[float] = []

    def stop() -> None:
        stop_at.append(time.monotonic())
        cancel.set()

    timer = threading.Timer(one_call + 0.5, stop)  # by then the sleep is running
    timer.start()
    try:
        with pytest.raises(ToolCancelled):
            call(spec, "sleep", {"seconds": 10}, timeout=30, cancel=cancel)
        ended = time.monotonic()
    finally:
        timer.cancel()
    assert stop_at and ended - stop_at[0] < 2.0
    assert stdio_servers_running() == []


def test_a_stdio_server_sees_only_the_allowlisted_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SECRET_KEY", "DATABASE_URL", "REDIS_URL", "OPENAI_API_KEY", "PLATFORM_CANARY"):
        monkeypatch.setenv(name, "must-not-leak")
    names = call(stdio_spec(TOOL_TOKEN="for-this-server"), "env_leak", {}, timeout=30).splitlines()
    assert "TOOL_TOKEN" in names and "PATH" in names
    leaked = {"SECRET_KEY", "DATABASE_URL", "REDIS_URL", "OPENAI_API_KEY", "PLATFORM_CANARY"} & set(names)
    assert leaked == set()
    # Python may add LC_CTYPE itself (PEP 538); nothing else comes from the worker.
    assert set(names) - {"PATH", "HOME", "LANG", "LC_ALL", "TZ", "PYTHONPATH", "TOOL_TOKEN", "LC_CTYPE"} == set()


def test_the_spec_keeps_its_secrets_out_of_its_repr() -> None:
    spec = ServerSpec(name="s", command=["x"], env={"TOKEN": "hunter2"}, headers={"Authorization": "Bearer hunter3"})
    assert "hunter2" not in repr(spec) and "hunter3" not in repr(spec)
    assert os.environ.get("TOKEN") != "hunter2"
