"""An agent's base_url may name only hosts OUTBOUND_ALLOWED_HOSTS allows: the API and the admin refuse others."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from rest_framework.test import APIClient

from agents.models import Agent
from tests.agents.test_admin_backend_options import ADD, as_posted, form_errors
from tests.inference.outbound_helpers import Resolver

METADATA_URL = "http://169.254.169.254/latest/v1"


def _remote(base_url: str, backend: str = "openai_compat", **options: Any) -> dict[str, Any]:
    return {
        "name": "Remote",
        "slug": "remote",
        "backend": backend,
        "backend_options": {"base_url": base_url, **options},
    }


def _base_url_errors(response: Any) -> list[str]:
    assert response.status_code == 400, response.content
    return [line for line in response.json()["errors"]["backend_options"] if line.startswith("base_url: ")]


@pytest.mark.parametrize(
    ("backend", "extra"), [("openai_compat", {}), ("vllm", {"mode": "external"})], ids=["openai_compat", "vllm"]
)
def test_a_metadata_address_is_refused_and_no_agent_is_made(
    staff_api: APIClient, settings: Any, backend: str, extra: dict[str, Any]
) -> None:
    settings.OUTBOUND_ALLOWED_HOSTS = []
    response = staff_api.post("/api/agents/", _remote(METADATA_URL, backend, **extra), format="json")
    (line,) = _base_url_errors(response)
    assert "link-local" in line and "OUTBOUND_ALLOWED_HOSTS" in line
    assert not Agent.objects.filter(slug="remote").exists()


def test_a_name_that_resolves_to_a_link_local_address_is_refused(
    staff_api: APIClient, settings: Any, dns: Resolver
) -> None:
    settings.OUTBOUND_ALLOWED_HOSTS = []
    dns.answer("metadata.test", ["fe80::a9fe:a9fe"])
    response = staff_api.post("/api/agents/", _remote("http://metadata.test:8000/v1"), format="json")
    assert "fe80::a9fe:a9fe" in _base_url_errors(response)[0]


def test_an_agent_cannot_be_pointed_at_a_metadata_address_later(staff_api: APIClient, settings: Any) -> None:
    settings.OUTBOUND_ALLOWED_HOSTS = []
    made = staff_api.post("/api/agents/", _remote("http://127.0.0.1:8080/v1"), format="json")
    assert made.status_code == 201, made.content  # loopback: a server on the worker's own machine
    changed = staff_api.patch("/api/agents/remote/", {"backend_options": {"base_url": METADATA_URL}}, format="json")
    assert _base_url_errors(changed)
    assert Agent.objects.get(slug="remote").backend_options == {"base_url": "http://127.0.0.1:8080/v1"}


def test_with_a_list_only_the_hosts_it_names_are_taken(staff_api: APIClient, settings: Any) -> None:
    settings.OUTBOUND_ALLOWED_HOSTS = ["models.example.com"]
    refused = staff_api.post("/api/agents/", _remote("http://127.0.0.1:8080/v1"), format="json")
    assert "not in OUTBOUND_ALLOWED_HOSTS" in _base_url_errors(refused)[0]
    made = staff_api.post("/api/agents/", _remote("https://models.example.com/v1"), format="json")
    assert made.status_code == 201, made.content


def test_the_admin_shows_a_refused_base_url_on_its_field(admin_client: Client, settings: Any) -> None:
    settings.OUTBOUND_ALLOWED_HOSTS = []
    page: Any = admin_client.get(ADD)
    data = as_posted(
        page, name="Remote", slug="remote", backend="openai_compat", opt__openai_compat__base_url=METADATA_URL
    )
    answer: Any = admin_client.post(ADD, data)
    assert answer.status_code == 200  # the form again, with the error
    assert "link-local" in " ".join(form_errors(answer)["opt__openai_compat__base_url"])
    assert not Agent.objects.filter(slug="remote").exists()
