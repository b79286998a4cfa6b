"""Where a worker may connect for an agent: OUTBOUND_ALLOWED_HOSTS, checked by address and at connect time."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest
from django.core.exceptions import ImproperlyConfigured

from inference.outbound import OutboundRefused, url_check, url_opener
from inference.outbound_http import GuardedTransport
from tests.inference.outbound_helpers import Resolver, Upstream

METADATA = "169.254.169.254"


@pytest.mark.parametrize(
    "url",
    [
        f"http://{METADATA}/latest/meta-data",
        "http://[fe80::1]:8000/v1",
        f"http://[::ffff:{METADATA}]/v1",  # an IPv6 address that leads to the IPv4 one
        "http://[64:ff9b::a9fe:a9fe]/v1",  # NAT64's form of 169.254.169.254
        "http://100.100.100.200/v1",
        "http://0.0.0.0:8000/v1",
    ],
)
def test_by_default_link_local_and_metadata_addresses_are_refused(settings: Any, url: str) -> None:
    settings.OUTBOUND_ALLOWED_HOSTS = []
    with pytest.raises(OutboundRefused) as caught:
        url_check(url)
    assert "OUTBOUND_ALLOWED_HOSTS" in caught.value.detail


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080/v1", "http://[::1]:8000/v1", "http://10.1.2.3/v1", "https://8.8.8.8/v1"]
)
def test_by_default_loopback_private_and_public_addresses_are_allowed(settings: Any, url: str) -> None:
    settings.OUTBOUND_ALLOWED_HOSTS = []
    url_check(url)


def test_a_name_that_resolves_to_a_metadata_address_is_refused(settings: Any, dns: Resolver) -> None:
    settings.OUTBOUND_ALLOWED_HOSTS = []
    dns.answer("metadata.test", [METADATA])
    dns.answer("mixed.test", ["10.0.0.7", METADATA])  # every address counts, not just the first
    dns.answer("gpu-box.test", ["192.168.1.20"])
    for name in ("metadata.test", "mixed.test"):
        with pytest.raises(OutboundRefused) as caught:
            url_check(f"http://{name}:8000/v1")
        assert METADATA in caught.value.detail and "link-local" in caught.value.detail
    url_check("http://gpu-box.test:8000/v1")


def test_a_listed_address_allows_even_a_metadata_address(settings: Any) -> None:
    settings.OUTBOUND_ALLOWED_HOSTS = ["*", f"{METADATA}"]
    url_check(f"http://{METADATA}/v1")
    with pytest.raises(OutboundRefused):
        url_check("http://169.254.10.10/v1")  # "*" alone never opens the refused ranges


def test_a_list_allows_only_the_hosts_it_names(settings: Any, dns: Resolver) -> None:
    settings.OUTBOUND_ALLOWED_HOSTS = ["models.example.com", "10.0.0.0/8", "*.gpu.example.com"]
    dns.answer("lan-box.test", ["10.4.5.6"])
    dns.answer("elsewhere.test", ["192.168.7.7"])
    for allowed in (
        "https://models.example.com/v1",  # by name, resolvable here or not: the worker checks again
        "http://10.9.8.7:8000/v1",
        "http://a.gpu.example.com:8000/v1",
        "http://lan-box.test:8000/v1",  # by what it resolves to
    ):
        url_check(allowed)
    for refused in ("http://127.0.0.1:8080/v1", "http://elsewhere.test/v1", "http://unknown.example.org/v1"):
        with pytest.raises(OutboundRefused):
            url_check(refused)


def test_a_bad_entry_in_the_setting_names_the_setting(settings: Any) -> None:
    settings.OUTBOUND_ALLOWED_HOSTS = ["models.example.com", "http://oops/"]
    with pytest.raises(ImproperlyConfigured, match="OUTBOUND_ALLOWED_HOSTS: 'http://oops/'"):
        url_check("http://models.example.com/v1")


def test_the_transport_refuses_a_name_that_resolves_to_a_metadata_address_when_it_connects(
    settings: Any, dns: Resolver, upstream: Upstream
) -> None:
    settings.OUTBOUND_ALLOWED_HOSTS = []
    dns.answer("rebind.test", [METADATA])
    with httpx2.Client(transport=GuardedTransport()) as client, pytest.raises(OutboundRefused):
        client.get(f"http://rebind.test:{upstream.port}/v1/models", timeout=5)


def test_the_transport_connects_to_the_address_it_checked_never_to_a_second_answer(
    settings: Any, dns: Resolver, upstream: Upstream
) -> None:
    # DNS rebinding: the first answer passes the check, a later one would lead elsewhere.
    settings.OUTBOUND_ALLOWED_HOSTS = []
    dns.answer("rebind.test", ["127.0.0.1"], [METADATA])
    with httpx2.Client(transport=GuardedTransport()) as client:
        response = client.get(f"http://rebind.test:{upstream.port}/v1/models", timeout=5)
    assert response.status_code == 200
    assert dns.lookups["rebind.test"] == 1 and upstream.requests == ["GET /v1/models"]


def test_the_urllib_opener_refuses_a_metadata_address(settings: Any, dns: Resolver, upstream: Upstream) -> None:
    settings.OUTBOUND_ALLOWED_HOSTS = []
    dns.answer("rebind.test", [METADATA])
    with pytest.raises(OutboundRefused):
        url_opener().open(f"http://rebind.test:{upstream.port}/tokenize", timeout=5)
    with url_opener().open(f"{upstream.url}/models", timeout=5) as response:
        assert response.status == 200
