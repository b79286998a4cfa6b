"""What a model server says in an error reaches staff (the worker's log), never the agent's chat users."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from rest_framework.test import APIClient

from agents.models import Agent
from inference.backends.base import BackendError
from inference.backends.registry import options_validate
from inference.backends.vllm import VLLMBackend
from inference.cache import model_cache
from sessions_app import services
from sessions_app.replies import reply_generate
from tests.inference.outbound_helpers import Upstream

SECRET = "sk-live-UPSTREAM-SECRET-4242"
PLAIN = "An administrator can see the details."


@pytest.fixture
def leaky(upstream: Upstream) -> Iterator[Upstream]:
    """A server whose errors quote something no chat user should read."""
    upstream.status = 500
    upstream.body = {"error": {"message": f"connecting to postgres://app:{SECRET}@db failed", "type": "server_error"}}
    yield upstream
    model_cache().clear()


def test_the_chat_user_reads_a_plain_error_and_the_worker_log_has_the_servers_words(
    user: Any, api: APIClient, leaky: Upstream, caplog: pytest.LogCaptureFixture
) -> None:
    agent = Agent.objects.create(
        name="Remote", slug="remote", backend="openai_compat", backend_options={"base_url": leaky.url, "timeout": 10}
    )
    session = services.session_create(owner=user, agent=agent)
    _, reply = services.message_send(session=session, content="Hi")
    assert reply is not None
    with caplog.at_level(logging.WARNING, logger="sessions_app.replies"):
        reply_generate(message_id=reply.pk)

    response = api.get(f"/api/sessions/{session.pk}/messages/")
    assert response.status_code == 200
    assert SECRET not in response.content.decode() and leaky.url not in response.content.decode()
    (shown,) = [m for m in response.json()["results"] if m["id"] == reply.pk]
    assert shown["status"] == "failed"
    assert "The model server answered an error (HTTP 500)" in shown["error"] and PLAIN in shown["error"]
    # Staff find the server's own words, and which reply they belong to, in the worker's log.
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"reply {reply.pk} failed" in line and SECRET in line for line in logged), logged


def test_a_refused_token_count_at_an_external_vllm_server_keeps_its_words_for_staff(leaky: Upstream) -> None:
    backend = VLLMBackend(
        model_path="", options=options_validate("vllm", {"mode": "external", "base_url": leaky.url, "timeout": 10})
    )
    backend.load()
    try:
        with pytest.raises(BackendError) as caught:
            backend.count_tokens([{"role": "user", "content": "Hi"}])
    finally:
        backend.close()
    assert SECRET not in str(caught.value) and PLAIN in str(caught.value) and "HTTP 500" in str(caught.value)
    assert SECRET in caught.value.detail
