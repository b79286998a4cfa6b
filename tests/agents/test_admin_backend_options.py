"""The agent admin edits backend options as form fields built from each backend's schema."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import pytest
from django import forms
from django.http import HttpResponse
from django.test import Client
from pydantic import Field

from agents.models import Agent
from inference.backends.base import Backend, ChatMessage, Chunk, GenerationParams, StopFlag
from inference.backends.options import BackendOptions
from inference.backends.registry import backend_classes
from inference.models import ModelArtifact

ADD = "/admin/agents/agent/add/"


class EchoOptions(BackendOptions):
    voice: Literal["calm", "loud"] = Field("calm", description="How it answers.")
    repeat: int = Field(1, ge=1, le=5, description="Times it says it.")


class EchoBackend(Backend):
    """A backend this test adds to INFERENCE_BACKENDS; never loaded."""

    name = "echo"
    label = "Echo"
    options_schema = EchoOptions
    formats = frozenset({"gguf"})

    def load(self) -> None:
        raise NotImplementedError

    def stream_chat(
        self, messages: list[ChatMessage], params: GenerationParams, *, should_stop: StopFlag = lambda: False,
        session_key: str | None = None,
    ) -> Iterator[Chunk]:  # fmt: skip
        raise NotImplementedError

    def count_tokens(self, messages: list[ChatMessage]) -> int:
        raise NotImplementedError


def as_posted(page: HttpResponse, **changes: Any) -> dict[str, Any]:
    """What a browser sends for the form as the page shows it, with ``changes`` typed in."""
    form = page.context["adminform"].form
    data: dict[str, Any] = {}
    for name, field in form.fields.items():
        value = form[name].value()
        if isinstance(field, forms.FileField) or value is None or value is False or value == []:
            continue
        data[name] = "on" if value is True else value
    data.update(changes)
    return data


def form_errors(page: HttpResponse) -> dict[str, list[str]]:
    return dict(page.context["adminform"].form.errors)


@pytest.fixture
def echo_backend(settings: Any) -> None:
    settings.INFERENCE_BACKENDS = [*settings.INFERENCE_BACKENDS, f"{__name__}.EchoBackend"]


def test_the_add_page_shows_each_backends_options_with_default_and_bounds(admin_client: Client) -> None:
    page = admin_client.get(ADD)
    html = page.content.decode()
    for name, cls in backend_classes().items():
        assert f"{cls.label} options" in html
        assert f"backend-options backend-{name}" in html
        for option in cls.options_schema.model_fields:
            assert f'name="opt__{name}__{option}"' in html
    assert "Prompt-processing batch size. Default 512; 1 to 65536." in html
    assert "Share of GPU memory for vLLM. Default 0.9; more than 0, at most 1." in html
    assert 'name="backend_options"' not in html
    assert "agents/backend_options.js" in html


def test_a_new_agent_starts_at_the_defaults(admin_client: Client) -> None:
    form = admin_client.get(ADD).context["adminform"].form
    assert form["backend"].value() == "llama_cpp"
    assert form["opt__llama_cpp__n_batch"].value() == 512
    assert form["opt__llama_cpp__use_mmap"].value() is True
    assert form["opt__openvino__device"].value() == "CPU"


def test_the_change_page_shows_the_stored_options(admin_client: Client, agent: Agent) -> None:
    agent.backend_options = {"n_batch": 128}
    agent.save()
    form = admin_client.get(f"/admin/agents/agent/{agent.pk}/change/").context["adminform"].form
    assert form["opt__llama_cpp__n_batch"].value() == 128
    assert form["opt__llama_cpp__n_gpu_layers"].value() == 0


def test_saving_keeps_only_the_options_that_differ_from_the_defaults(
    admin_client: Client, gguf_artifact: ModelArtifact
) -> None:
    page = admin_client.get(ADD)
    data = as_posted(
        page, name="Edge", slug="edge", backend="llama_cpp", model=gguf_artifact.pk, opt__llama_cpp__n_batch=256
    )
    response = admin_client.post(ADD, data)
    assert response.status_code == 302, form_errors(response)
    assert Agent.objects.get(slug="edge").backend_options == {"n_batch": 256}


def test_an_out_of_bounds_option_is_an_error_on_its_field(admin_client: Client, gguf_artifact: ModelArtifact) -> None:
    page = admin_client.get(ADD)
    data = as_posted(page, name="Edge", slug="edge", backend="llama_cpp", model=gguf_artifact.pk)
    response = admin_client.post(ADD, {**data, "opt__llama_cpp__n_batch": 0})
    assert response.status_code == 200
    assert "greater than or equal to 1" in " ".join(form_errors(response)["opt__llama_cpp__n_batch"])
    assert not Agent.objects.filter(slug="edge").exists()


def test_a_problem_only_the_schema_sees_is_put_on_its_field(admin_client: Client) -> None:
    page = admin_client.get(ADD)
    data = as_posted(page, name="Remote", slug="remote", backend="openai_compat", opt__openai_compat__timeout=0)
    response = admin_client.post(ADD, data)
    errors = form_errors(response)
    assert "greater than 0" in " ".join(errors["opt__openai_compat__timeout"])
    assert "Field required" in " ".join(errors["opt__openai_compat__base_url"])
    assert not Agent.objects.filter(slug="remote").exists()


def test_a_problem_with_no_single_field_is_a_form_error(admin_client: Client) -> None:
    page = admin_client.get(ADD)
    data = as_posted(page, name="Ext", slug="ext", backend="vllm", opt__vllm__mode="external")
    response = admin_client.post(ADD, data)
    assert "external mode needs base_url" in " ".join(form_errors(response)["__all__"])
    assert not Agent.objects.filter(slug="ext").exists()


def test_switching_to_openai_compat_stores_its_options_only(admin_client: Client, agent: Agent) -> None:
    agent.backend_options = {"n_batch": 128}
    agent.api_key = "sk-kept"
    agent.save()
    url = f"/admin/agents/agent/{agent.pk}/change/"
    data = as_posted(admin_client.get(url), backend="openai_compat", opt__openai_compat__base_url="http://vllm:8000/v1")
    response = admin_client.post(url, data)
    assert response.status_code == 302, form_errors(response)
    agent.refresh_from_db()
    assert agent.backend == "openai_compat"
    assert agent.backend_options == {"base_url": "http://vllm:8000/v1"}
    assert agent.api_key == "sk-kept"


def test_what_is_typed_in_another_backends_fields_blocks_nothing(
    admin_client: Client, gguf_artifact: ModelArtifact
) -> None:
    page = admin_client.get(ADD)
    data = as_posted(page, name="Edge", slug="edge", backend="llama_cpp", model=gguf_artifact.pk)
    response = admin_client.post(ADD, {**data, "opt__vllm__tensor_parallel_size": "lots"})
    assert response.status_code == 302, form_errors(response)
    assert Agent.objects.get(slug="edge").backend_options == {}


def test_the_api_key_stays_write_only(admin_client: Client, agent: Agent) -> None:
    url = f"/admin/agents/agent/{agent.pk}/change/"
    data = as_posted(admin_client.get(url), api_key="sk-new")
    assert admin_client.post(url, data).status_code == 302
    agent.refresh_from_db()
    assert agent.api_key == "sk-new"
    page = admin_client.get(url)
    assert b"sk-new" not in page.content
    assert admin_client.post(url, as_posted(page, clear_api_key="on")).status_code == 302
    agent.refresh_from_db()
    assert agent.api_key == ""


def test_a_backend_added_in_settings_gets_a_choice_and_a_fieldset(
    echo_backend: None, admin_client: Client, gguf_artifact: ModelArtifact
) -> None:
    page = admin_client.get(ADD)
    html = page.content.decode()
    assert '<option value="echo">Echo</option>' in html
    assert "Echo options" in html and "backend-options backend-echo" in html
    assert "Times it says it. Default 1; 1 to 5." in html
    data = as_posted(page, name="Echo", slug="echo", backend="echo", model=gguf_artifact.pk, opt__echo__voice="loud")
    response = admin_client.post(ADD, data)
    assert response.status_code == 302, form_errors(response)
    assert Agent.objects.get(slug="echo").backend_options == {"voice": "loud"}


def test_an_agent_on_a_backend_no_longer_configured_still_opens(admin_client: Client, agent: Agent) -> None:
    Agent.objects.filter(pk=agent.pk).update(backend="retired")
    url = f"/admin/agents/agent/{agent.pk}/change/"
    page = admin_client.get(url)
    assert '<option value="retired" selected>retired (not configured)</option>' in page.content.decode()
    response = admin_client.post(url, as_posted(page))
    assert "Unknown backend 'retired'" in " ".join(form_errors(response)["backend"])
