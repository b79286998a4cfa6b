"""``/api/tool-servers/``: staff register MCP servers, whose tools are discovered before anything is
saved; secrets never come back; agents choose among the discovered tools (``/api/agents/``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from rest_framework.test import APIClient

from agents.models import Agent, ToolServer
from tests.conftest import _client_for, grant

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s3cret-value-never-shown"


def body(name: str = "testing", **changes: Any) -> dict[str, Any]:
    return {
        "name": name,
        "transport": "stdio",
        "command": [sys.executable, "-m", "tests.tools.mcp_server", "stdio"],
        "env": {"PYTHONPATH": str(ROOT), "TOOL_TOKEN": SECRET},
        "timeout_seconds": 30,
        **changes,
    }


@pytest.fixture
def operator(staff: User) -> User:
    """A staff member who may register and refresh tool servers, as in the admin."""
    return grant(staff, "add_toolserver", "change_toolserver", "add_agent", "change_agent")


@pytest.fixture
def operator_api(operator: User) -> APIClient:
    return _client_for(operator)


@pytest.fixture
def registered(operator_api: APIClient) -> dict[str, Any]:
    response = operator_api.post("/api/tool-servers/", body(), format="json")
    assert response.status_code == 201, response.content
    return dict(response.json())


def test_staff_register_a_stdio_server_and_get_its_discovered_tools(registered: dict[str, Any]) -> None:
    tools = {tool["name"]: tool for tool in registered["tools"]}
    assert set(tools) == {"add", "echo", "sleep", "block", "fail", "env_leak"}
    assert tools["add"]["description"] == "Add two integers."
    assert tools["add"]["input_schema"]["properties"]["b"]["type"] == "integer"
    assert registered["env_keys"] == ["PYTHONPATH", "TOOL_TOKEN"]
    assert registered["discovered_at"]
    stored = ToolServer.objects.get(name="testing")
    assert [tool["name"] for tool in stored.tools] == [tool["name"] for tool in registered["tools"]]


def test_env_and_header_values_never_come_back(operator_api: APIClient, registered: dict[str, Any]) -> None:
    for response in (
        operator_api.get("/api/tool-servers/"),
        operator_api.get(f"/api/tool-servers/{registered['id']}/"),
        operator_api.post(f"/api/tool-servers/{registered['id']}/refresh/"),
    ):
        assert response.status_code == 200
        assert SECRET.encode() not in response.content
        assert b'"env":' not in response.content and b'"headers":' not in response.content
    assert SECRET not in str(registered)


def test_a_server_that_cannot_start_is_refused_and_nothing_is_saved(operator_api: APIClient) -> None:
    response = operator_api.post("/api/tool-servers/", body(command=["no-such-mcp-server-anywhere"]), format="json")
    assert response.status_code == 400
    assert "'no-such-mcp-server-anywhere' was not found" in response.json()["message"]
    assert not ToolServer.objects.exists()


def test_an_http_server_that_does_not_answer_is_refused(operator_api: APIClient) -> None:
    payload = {"name": "away", "transport": "http", "url": "http://127.0.0.1:9/mcp", "headers": {"X-Key": SECRET}}
    response = operator_api.post("/api/tool-servers/", payload, format="json")
    assert response.status_code == 400
    assert "cannot connect to http://127.0.0.1:9/mcp" in response.json()["message"]
    assert SECRET.encode() not in response.content
    assert not ToolServer.objects.exists()


def test_a_stdio_server_needs_a_command(operator_api: APIClient) -> None:
    response = operator_api.post("/api/tool-servers/", body(command=[]), format="json")
    assert response.status_code == 400
    assert "command" in response.json()["errors"]
    assert not ToolServer.objects.exists()


def test_refresh_picks_up_a_tool_the_server_now_offers(operator_api: APIClient, tmp_path: Path) -> None:
    flag = tmp_path / "offer-multiply"
    env = {"PYTHONPATH": str(ROOT), "MCP_TEST_EXTRA_TOOL_FILE": str(flag)}
    created = operator_api.post("/api/tool-servers/", body(env=env), format="json").json()
    assert "multiply" not in {tool["name"] for tool in created["tools"]}

    flag.write_text("on")
    response = operator_api.post(f"/api/tool-servers/{created['id']}/refresh/")
    assert response.status_code == 200
    assert "multiply" in {tool["name"] for tool in response.json()["tools"]}
    assert response.json()["discovered_at"] > created["discovered_at"]
    assert "multiply" in {tool["name"] for tool in ToolServer.objects.get(pk=created["id"]).tools}


def test_a_failed_refresh_keeps_the_stored_tools(operator_api: APIClient, registered: dict[str, Any]) -> None:
    ToolServer.objects.filter(pk=registered["id"]).update(command=["no-such-mcp-server-anywhere"])
    response = operator_api.post(f"/api/tool-servers/{registered['id']}/refresh/")
    assert response.status_code == 400
    assert "was not found" in response.json()["message"]
    assert len(ToolServer.objects.get(pk=registered["id"]).tools) == 6


def test_non_staff_get_403_with_a_reason_and_anonymous_callers_401(
    api: APIClient, anon_api: APIClient, registered: dict[str, Any]
) -> None:
    for client, status in ((api, 403), (anon_api, 401)):
        for method, url in (
            ("get", "/api/tool-servers/"),
            ("post", "/api/tool-servers/"),
            ("get", f"/api/tool-servers/{registered['id']}/"),
            ("post", f"/api/tool-servers/{registered['id']}/refresh/"),
        ):
            response = getattr(client, method)(url, body(name="other"), format="json")
            assert response.status_code == status, (method, url, response.status_code)
    assert "Only staff" in api.get("/api/tool-servers/").json()["message"]
    assert ToolServer.objects.count() == 1


def test_staff_without_the_model_permission_may_look_but_not_register(staff_api: APIClient) -> None:
    assert staff_api.get("/api/tool-servers/").status_code == 200
    response = staff_api.post("/api/tool-servers/", body(), format="json")
    assert response.status_code == 403
    assert "agents.add_toolserver" in response.json()["message"]


def test_an_agent_may_have_built_in_and_discovered_tools(
    operator_api: APIClient, api: APIClient, agent: Agent, registered: dict[str, Any]
) -> None:
    response = operator_api.patch(
        f"/api/agents/{agent.slug}/",
        {"tools": ["calculator", "testing.add"], "tool_choice": "required", "max_tool_steps": 3},
        format="json",
    )
    assert response.status_code == 200, response.content
    assert response.json()["tools"] == ["calculator", "testing.add"]
    agent.refresh_from_db()
    assert (agent.tools, agent.tool_choice, agent.max_tool_steps) == (["calculator", "testing.add"], "required", 3)
    # The picker shows every user an agent's tools.
    listed = {a["slug"]: a for a in api.get("/api/agents/").json()["results"]}
    assert listed[agent.slug]["tools"] == ["calculator", "testing.add"]


def test_an_unknown_tool_is_refused_by_name(operator_api: APIClient, agent: Agent, registered: dict[str, Any]) -> None:
    response = operator_api.patch(
        f"/api/agents/{agent.slug}/", {"tools": ["calculator", "testing.nope"]}, format="json"
    )
    assert response.status_code == 400
    errors = response.json()["errors"]["tools"]
    assert len(errors) == 1 and "'testing.nope'" in errors[0] and "'calculator'" not in errors[0]
    assert "testing.nope" in response.json()["message"]
    agent.refresh_from_db()
    assert agent.tools == []


def test_agent_tool_settings_are_bounded(operator_api: APIClient, agent: Agent) -> None:
    for change in (
        {"max_tool_steps": 21},
        {"max_tool_steps": 0},
        {"tool_choice": "sometimes"},
        {"tool_choice": "required"},
    ):
        response = operator_api.patch(f"/api/agents/{agent.slug}/", change, format="json")
        assert response.status_code == 400, change


def test_the_admin_registers_a_server_and_offers_its_tools_to_agents(superuser: User, agent: Agent) -> None:
    client = Client()
    client.force_login(superuser)
    form = {
        "name": "viaadmin",
        "transport": "stdio",
        "command": f'["{sys.executable}", "-m", "tests.tools.mcp_server", "stdio"]',
        "env": f'{{"PYTHONPATH": "{ROOT}", "TOOL_TOKEN": "{SECRET}"}}',
        "url": "",
        "headers": "",
        "timeout_seconds": "30",
    }
    response = client.post("/admin/agents/toolserver/add/", form)
    assert response.status_code == 302, response.content.decode()[:2000]
    server = ToolServer.objects.get(name="viaadmin")
    assert len(server.tools) == 6 and server.env["TOOL_TOKEN"] == SECRET

    page = client.get(f"/admin/agents/toolserver/{server.pk}/change/").content.decode()
    assert "viaadmin.add" in page and SECRET not in page
    assert "viaadmin.add" in client.get(f"/admin/agents/agent/{agent.pk}/change/").content.decode()

    refused = client.post("/admin/agents/toolserver/add/", {**form, "name": "broken", "command": '["no-such-x"]'})
    assert refused.status_code == 200 and "&#x27;no-such-x&#x27; was not found" in refused.content.decode()
    assert not ToolServer.objects.filter(name="broken").exists()

    refreshed = client.post(
        "/admin/agents/toolserver/", {"action": "refresh_tools", "_selected_action": [server.pk]}, follow=True
    )
    assert "Tool server viaadmin: 6 tools discovered." in refreshed.content.decode()
