"""Agents that act, on the real stack: an agent on the bundled model (llama.cpp in the Celery
worker) with ``tool_choice: "required"`` calls a tool of an MCP server (the tests' own, over
stdio, started by the worker) over the websocket; the call and its result are stored and shown,
and a final answer follows; a stop during a tool that hangs ends the reply within 2 s and leaves
no server process; a worker killed during a call leaves the reply ``interrupted`` with its call
kept. The last test restarts the worker."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

from tests.integration.chat_client import Watcher, api, send, ws_open
from tests.integration.conftest import ROOT, Platform
from tests.integration.test_reply_streaming import stored
from tests.platform_shell import shell_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def agents(platform: Platform) -> Iterator[None]:
    """The tests' MCP server registered (its tools discovered on save), and two agents on the
    bundled model: one that must add with it, one that must call a tool that hangs."""
    shell_run(
        platform,
        "import sys\n"
        "from agents.models import Agent, ToolServer\n"
        "from agents.tool_servers import tool_server_save\n"
        "ToolServer.objects.filter(name='demo').delete()\n"
        "server = ToolServer(name='demo', transport='stdio', timeout_seconds=90,\n"
        "    command=[sys.executable, '-m', 'tests.tools.mcp_server', 'stdio'],"
        f" env={{'PYTHONPATH': {str(ROOT)!r}}})\n"
        "tool_server_save(server=server)\n"
        "base = Agent.objects.get(slug='assistant')\n"
        "for slug, tools in (('adder', ['demo.add']), ('waiter', ['demo.block'])):\n"
        "    Agent.objects.update_or_create(slug=slug, defaults=dict(name=slug.title(), model=base.model,\n"
        "        backend=base.backend, system_prompt='', tools=tools, tool_choice='required',\n"
        "        max_tool_steps=1, max_tokens=64, temperature=0.0))\n",
    )  # fmt: skip
    yield


def asked(platform: Platform, agent: str, content: str) -> tuple[Watcher, int, int]:
    status, body = api(platform.http, platform.tokens["alice"], "POST", "/api/sessions/", {"agent": agent})
    assert status == 201, body
    sid = int(body["id"])
    watcher = Watcher(ws_open(platform.ws, sid, platform.tokens["alice"]))
    watcher.recv()
    send(watcher.ws, type="message", content=content)
    return watcher, sid, watcher.first_reply_id()


def without_overhead(call: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in call.items() if k != "overhead_ms"}


def servers_of(pid: int) -> list[psutil.Process]:
    """The tests' stdio MCP servers among ``pid``'s descendants."""
    found = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if "tests.tools.mcp_server" in child.cmdline() and child.status() != psutil.STATUS_ZOMBIE:
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


def test_a_required_call_over_the_websocket_is_stored_shown_and_answered(platform: Platform, agents: None) -> None:
    watcher, sid, reply_id = asked(platform, "adder", "What is 2 plus 3?")
    started = watcher.until(lambda e: e["type"] == "tool_call" and e["message_id"] == reply_id)
    ended = watcher.until(lambda e: e["type"] == "tool_result" and e["message_id"] == reply_id)
    done = watcher.until_done(reply_id).done
    watcher.close()
    assert done is not None and done["status"] == "complete", done
    call = ended["call"]
    assert started["call"]["id"] == call["id"] and started["call"]["status"] == "running"
    assert call["name"] == "demo.add" and call["status"] == "ok", call
    # The engine could only write arguments the tool takes, and the server added them.
    arguments = json.loads(call["arguments"])
    assert set(arguments) == {"a", "b"} and call["result"] == str(arguments["a"] + arguments["b"])
    # A final answer followed the result, and it is not the call's markup.
    assert done["message"]["content"].strip() and "<tool_call>" not in done["message"]["content"]
    # Stored, and shown to a client that comes later.
    row = stored(platform, sid, reply_id)
    assert [without_overhead(c) for c in row["tool_calls"]] == [call]
    assert set(row["tool_calls"][0]["overhead_ms"]) == {"start", "resume"}
    later = Watcher(ws_open(platform.ws, sid, platform.tokens["alice"]))
    snapshot = later.recv()
    later.close()
    [shown] = [m for m in snapshot["messages"] if m["id"] == reply_id]
    assert shown["tool_calls"] == row["tool_calls"]


def test_a_stop_during_a_hanging_tool_ends_the_reply_within_two_seconds_and_no_server_is_left(
    platform: Platform, agents: None
) -> None:
    watcher, sid, reply_id = asked(platform, "waiter", "Wait for me.")
    watcher.until(lambda e: e["type"] == "tool_call" and e["message_id"] == reply_id)
    worker = platform.procs["worker"].pid
    deadline = time.monotonic() + 30
    while not servers_of(worker):  # the worker started the server for the call
        assert time.monotonic() < deadline, "no MCP server process under the worker"
        time.sleep(0.1)
    time.sleep(1.0)  # the server is in the tool
    asked_at = time.monotonic()
    send(watcher.ws, type="stop", message_id=reply_id)
    done = watcher.until_done(reply_id, timeout=30).done
    took = time.monotonic() - asked_at
    watcher.close()
    assert done is not None and done["status"] == "cancelled", done
    assert took < 2.0, f"the stop took {took:.2f} s"
    assert [c["status"] for c in done["message"]["tool_calls"]] == ["cancelled"]
    deadline = time.monotonic() + 5
    while servers_of(worker):  # ended with the call, not a minute later
        assert time.monotonic() < deadline, [p.cmdline() for p in servers_of(worker)]
        time.sleep(0.1)


def test_a_worker_killed_during_a_call_leaves_the_reply_interrupted_with_its_call(
    platform: Platform, agents: None
) -> None:
    watcher, sid, reply_id = asked(platform, "waiter", "Wait for me.")
    running = watcher.until(lambda e: e["type"] == "tool_call" and e["message_id"] == reply_id)
    platform.kill("worker")  # SIGKILL to the whole process group: no chance to clean up
    try:
        time.sleep(4)  # past REPLY_STALE_SECONDS=3
        out = subprocess.run(
            [sys.executable, "manage.py", "reap_replies"], cwd=ROOT, env=platform.env, capture_output=True, text=True
        )  # fmt: skip
        assert out.returncode == 0 and "interrupted: 1" in out.stdout, out.stdout + out.stderr
        done = watcher.until_done(reply_id, timeout=30).done
        watcher.close()
        assert done is not None and done["status"] == "interrupted"
        row = stored(platform, sid, reply_id)
        [call] = row["tool_calls"]
        assert call["id"] == running["call"]["id"] and call["name"] == "demo.block"
        assert call["status"] == "cancelled" and "worker stopped" in call["error"]
    finally:
        platform.start_worker()
