"""The backends connect only where OUTBOUND_ALLOWED_HOSTS allows: when they load and on every connection."""

from __future__ import annotations

from typing import Any

import pytest

from inference.backends.base import BackendError
from inference.backends.openai_compat import OpenAICompatBackend
from inference.backends.registry import options_validate
from inference.backends.vllm import VLLMBackend
from tests.inference.outbound_helpers import Resolver, Upstream

METADATA = "169.254.169.254"
REFUSED = "at an address this platform does not connect to"


def _compat(url: str, **options: Any) -> OpenAICompatBackend:
    return OpenAICompatBackend(model_path="", options=options_validate("openai_compat", {"base_url": url, **options}))


def test_an_agent_saved_before_the_check_is_refused_when_the_worker_loads_it(settings: Any) -> None:
    settings.OUTBOUND_ALLOWED_HOSTS = []
    for backend in (
        _compat(f"http://{METADATA}/v1", timeout=2),
        VLLMBackend(
            model_path="",
            options=options_validate("vllm", {"mode": "external", "base_url": f"http://{METADATA}/v1", "timeout": 2}),
        ),
    ):
        with pytest.raises(BackendError, match=REFUSED) as caught:
            backend.load()
        assert not caught.value.retryable
        assert METADATA not in str(caught.value) and METADATA in caught.value.detail


def test_a_name_that_changes_between_the_load_check_and_the_request_is_refused(
    settings: Any, dns: Resolver, upstream: Upstream
) -> None:
    settings.OUTBOUND_ALLOWED_HOSTS = []
    dns.answer("rebind.test", ["127.0.0.1"], [METADATA])
    backend = _compat(f"http://rebind.test:{upstream.port}/v1", timeout=5)
    with pytest.raises(BackendError, match=REFUSED) as caught:
        backend.load()
    assert METADATA in caught.value.detail and upstream.requests == []


def test_the_hosted_vllm_engine_on_loopback_is_the_workers_own_and_not_checked(
    settings: Any, upstream: Upstream
) -> None:
    settings.OUTBOUND_ALLOWED_HOSTS = ["models.example.com"]  # loopback not listed
    with pytest.raises(BackendError, match=REFUSED):
        _compat(upstream.url, timeout=5).load()
    own = OpenAICompatBackend(
        model_path="", options=options_validate("openai_compat", {"base_url": upstream.url}), own_server=True
    )
    own.load()
    own.close()
    assert upstream.requests == ["GET /v1/models"]


def test_a_server_behind_a_proxy_from_the_environment_is_still_reached_through_it(
    settings: Any, monkeypatch: pytest.MonkeyPatch, upstream: Upstream
) -> None:
    # A guarded client would turn the environment's proxies off: the proxy connects instead.
    settings.OUTBOUND_ALLOWED_HOSTS = ["models.example.com", "127.0.0.1"]
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{upstream.port}")
    backend = _compat("http://models.example.com/v1", timeout=5)
    backend.load()
    backend.close()
    assert upstream.requests == ["GET http://models.example.com/v1/models"]
