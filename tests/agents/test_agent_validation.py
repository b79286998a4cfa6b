"""Backend options are validated per backend, in the API and in the admin."""

from __future__ import annotations

from typing import Any

from django.test import Client
from rest_framework.test import APIClient

from agents.admin import AgentAdminForm
from agents.models import Agent
from inference.models import ModelArtifact


def _payload(model: ModelArtifact, **over: Any) -> dict[str, Any]:
    data = {"name": "Edge bot", "slug": "edge-bot", "backend": "llama_cpp", "model": model.pk, "backend_options": {}}
    data.update(over)
    return data


def test_staff_create_an_agent_with_valid_options(staff_api: APIClient, gguf_artifact: ModelArtifact) -> None:
    response = staff_api.post(
        "/api/agents/", _payload(gguf_artifact, backend_options={"n_threads": 2, "n_gpu_layers": 0}), format="json"
    )
    assert response.status_code == 201, response.content
    assert response.json()["queue"] == "llama_cpp"
    assert Agent.objects.get(slug="edge-bot").backend_options == {"n_threads": 2, "n_gpu_layers": 0}


def test_an_unknown_or_out_of_range_option_is_a_field_error(staff_api: APIClient, gguf_artifact: ModelArtifact) -> None:
    bad = staff_api.post(
        "/api/agents/", _payload(gguf_artifact, backend_options={"n_threads": 0, "flux_capacitor": 1}), format="json"
    )
    assert bad.status_code == 400
    errors = " ".join(bad.json()["errors"]["backend_options"])
    assert "n_threads" in errors and "flux_capacitor" in errors
    assert not Agent.objects.filter(slug="edge-bot").exists()


def test_a_model_in_the_wrong_format_for_the_backend_is_refused(
    staff_api: APIClient, gguf_artifact: ModelArtifact
) -> None:
    response = staff_api.post(
        "/api/agents/", _payload(gguf_artifact, backend="openvino", backend_options={"device": "CPU"}), format="json"
    )
    assert response.status_code == 400
    assert "gguf" in " ".join(response.json()["errors"]["model"])


def test_openai_compat_needs_a_base_url_and_never_shows_its_key(staff_api: APIClient) -> None:
    missing = staff_api.post(
        "/api/agents/", {"name": "Remote", "slug": "remote", "backend": "openai_compat"}, format="json"
    )
    assert missing.status_code == 400 and "base_url" in " ".join(missing.json()["errors"]["backend_options"])
    made = staff_api.post(
        "/api/agents/",
        {
            "name": "Remote",
            "slug": "remote",
            "backend": "openai_compat",
            "backend_options": {"base_url": "http://127.0.0.1:9/v1"},
            "api_key": "sk-very-secret",
        },
        format="json",
    )
    assert made.status_code == 201, made.content
    assert "sk-very-secret" not in made.content.decode()
    assert made.json()["has_api_key"] is True
    assert b"sk-very-secret" not in staff_api.get("/api/agents/remote/").content


def test_the_admin_form_shows_option_errors_on_the_field(gguf_artifact: ModelArtifact) -> None:
    form = AgentAdminForm(
        data={
            "name": "A",
            "slug": "a",
            "backend": "llama_cpp",
            "model": gguf_artifact.pk,
            "opt__llama_cpp__n_batch": -4,
            "temperature": 0.7,
            "top_p": 0.9,
            "max_tokens": 100,
            "repetition_penalty": 1.0,
            "stop": "[]",
            "context_window": 2048,
            "visibility": "everyone",
            "avatar_emoji": "x",
        }  # fmt: skip
    )
    assert not form.is_valid()
    assert "greater than or equal to 1" in " ".join(form.errors["opt__llama_cpp__n_batch"])


def test_the_admin_never_renders_the_stored_api_key(superuser: Any) -> None:
    agent = Agent.objects.create(
        name="R", slug="r", backend="openai_compat",
        backend_options={"base_url": "http://127.0.0.1:9/v1"}, api_key="sk-hidden-key",
    )  # fmt: skip
    client = Client()
    client.force_login(superuser)
    page = client.get(f"/admin/agents/agent/{agent.pk}/change/")
    assert page.status_code == 200
    assert b"sk-hidden-key" not in page.content
