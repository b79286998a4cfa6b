from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command

from agents.models import Agent
from inference.bundled import bundled_model_path
from inference.models import ModelArtifact


def test_bootstrap_creates_the_bundled_model_and_the_assistant(db: Any) -> None:
    call_command("bootstrap", stdout=StringIO())
    agent = Agent.objects.get(slug="assistant")
    assert agent.backend == "llama_cpp" and agent.is_active
    assert agent.model is not None and agent.model.format == "gguf"
    assert agent.model.path == str(bundled_model_path())
    assert agent.model.size_bytes and agent.model.size_bytes > 50_000_000


def test_rerunning_bootstrap_keeps_what_is_there(db: Any) -> None:
    call_command("bootstrap", stdout=StringIO())
    Agent.objects.filter(slug="assistant").update(system_prompt="Edited by the admin", temperature=0.9)
    out = StringIO()
    call_command("bootstrap", stdout=out)
    assert "kept" in out.getvalue()
    assert Agent.objects.count() == 1 and ModelArtifact.objects.count() == 1
    agent = Agent.objects.get(slug="assistant")
    assert (agent.system_prompt, agent.temperature) == ("Edited by the admin", 0.9)


def test_bootstrap_creates_an_admin_on_request(db: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("CHATSITE_ADMIN_PASSWORD", "a-long-admin-password")
    call_command("bootstrap", "--admin-user", "boss", stdout=StringIO())
    boss = User.objects.get(username="boss")
    assert boss.is_superuser and boss.check_password("a-long-admin-password")
    call_command("bootstrap", "--admin-user", "boss", stdout=StringIO())
    assert User.objects.filter(username="boss").count() == 1


def test_bootstrap_admin_without_a_password_says_which_variable(db: Any, monkeypatch: Any) -> None:
    monkeypatch.delenv("CHATSITE_ADMIN_PASSWORD", raising=False)
    with pytest.raises(CommandError, match="CHATSITE_ADMIN_PASSWORD"):
        call_command("bootstrap", "--admin-user", "boss", stdout=StringIO())
