"""An agent's toolbox on its worker: its tools under names the model may call, and each call run
within its limits and recorded, against a real MCP server over stdio (tests/tools/mcp_server.py)."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import pytest
from django.contrib.auth.models import User

from agents.models import Agent, ToolServer
from agents.tool_servers import tool_server_save
from inference.tools.base import RESULT_CAP
from sessions_app.models import Message, Session
from sessions_app.tools import Toolbox, model_name

ROOT = Path(__file__).resolve().parents[2]


def demo_server(timeout_seconds: int = 30) -> ToolServer:
    """The tests' MCP server (tests/tools/mcp_server.py) registered as ``demo``, over stdio."""
    server = ToolServer(
        name="demo", transport="stdio", command=[sys.executable, "-m", "tests.tools.mcp_server", "stdio"],
        env={"PYTHONPATH": str(ROOT)}, timeout_seconds=timeout_seconds,
    )  # fmt: skip
    tool_server_save(server=server)
    return server


@pytest.fixture
def demo(db: None) -> ToolServer:
    return demo_server()


@pytest.fixture
def agent(demo: ToolServer) -> Agent:
    agent = Agent(name="Helper", slug="helper", backend="llama_cpp")
    agent.tools = ["calculator", "demo.add", "demo.fail", "demo.sleep", "demo.echo", "search_chats", "ask_agent"]
    assert agent._tool_errors() == []  # every name is known
    agent.save()
    return agent


@pytest.fixture
def alice(db: None) -> User:
    return User.objects.create_user("alice", password="x")


def test_the_model_calls_server_tools_by_names_every_engine_accepts(agent: Agent, alice: User) -> None:
    toolbox = Toolbox(agent, alice)
    names = [tool.name for tool in toolbox.constraint_tools()]
    # ask_agent is left out: this user has no other agent to ask (tests/sessions_app/test_ask_agent.py).
    assert names == ["calculator", "demo__add", "demo__fail", "demo__sleep", "demo__echo", "search_chats"]
    add = next(t for t in toolbox.constraint_tools() if t.name == "demo__add")
    assert add.parameters["required"] == ["a", "b"]  # the server's own schema
    assert model_name("my-server.tool/v2") == "my-server__tool_v2"


def test_a_call_runs_and_is_recorded_under_the_platform_name(agent: Agent, alice: User) -> None:
    toolbox = Toolbox(agent, alice)
    run = toolbox.run("call_1", "demo__add", json.dumps({"a": 2, "b": 3}))
    assert (run.id, run.name, run.status, run.result, run.error) == ("call_1", "demo.add", "ok", "5", "")
    assert run.duration_ms > 0 and run.for_model() == "5"
    calc = toolbox.run("call_2", "calculator", '{"expression": "2 + 3 * 4"}')
    assert (calc.status, calc.result) == ("ok", "14")
    assert set(run.as_json()) == {"id", "name", "arguments", "result", "error", "status", "duration_ms"}


def test_failures_come_back_as_the_tools_result_marked_as_errors(agent: Agent, alice: User) -> None:
    toolbox = Toolbox(agent, alice)
    failed = toolbox.run("c1", "demo__fail", json.dumps({"message": "the disk is full"}))
    assert failed.status == "error" and "the disk is full" in failed.error
    assert failed.for_model().startswith("Error: ") and "the disk is full" in failed.for_model()
    assert "no tool 'rm_rf'" in toolbox.run("c2", "rm_rf", "{}").error
    assert "not JSON" in toolbox.run("c3", "calculator", "{expression: 2}").error
    bad = toolbox.run("c4", "demo__add", json.dumps({"a": "two", "b": 3}))
    assert bad.status == "error" and "a" in bad.error  # checked against the server's schema first
    assert "division by zero" in toolbox.run("c5", "calculator", '{"expression": "1/0"}').error
    assert toolbox.run("c6", "ask_agent", '{"agent": "chef", "question": "Hi?"}').status == "error"


def test_a_long_result_is_cut_and_says_so(agent: Agent, alice: User) -> None:
    run = Toolbox(agent, alice).run("c1", "demo__echo", json.dumps({"text": "x" * (RESULT_CAP + 500)}))
    assert run.status == "ok" and len(run.result) < RESULT_CAP + 200 and "cut" in run.result


def test_a_stop_cancels_a_running_call_within_two_seconds(agent: Agent, alice: User) -> None:
    cancel = threading.Event()
    threading.Timer(1.5, cancel.set).start()  # after the server has started and the call is running
    started = time.monotonic()
    run = Toolbox(agent, alice).run("c1", "demo__sleep", json.dumps({"seconds": 30}), cancel)
    assert run.status == "cancelled", run
    assert time.monotonic() - started < 1.5 + 2


def test_search_chats_reads_only_the_asking_users_chats(agent: Agent, alice: User) -> None:
    bob = User.objects.create_user("bob", password="x")
    for owner, text in ((alice, "my sourdough starter smells of apples"), (bob, "bob's sourdough secret")):
        session = Session.objects.create(owner=owner, agent=agent)
        Message.objects.create(session=session, role="user", content=text)
    run = Toolbox(agent, alice).run("c1", "search_chats", '{"query": "sourdough"}')
    assert run.status == "ok" and "apples" in run.result and "secret" not in run.result


def test_a_tool_no_server_offers_any_more_is_left_out(agent: Agent, alice: User, demo: ToolServer) -> None:
    demo.tools = [t for t in demo.tools if t["name"] != "fail"]
    demo.save()
    names = [tool.name for tool in Toolbox(agent, alice).constraint_tools()]
    assert "demo__fail" not in names and "demo__add" in names
