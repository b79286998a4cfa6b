"""Where a backend may connect: the ``OUTBOUND_ALLOWED_HOSTS`` policy.

An agent's ``base_url`` makes a worker open connections wherever it points, so whoever edits
agents could otherwise reach whatever the worker reaches (a cloud metadata service, above all).
The policy is checked twice:

- when an agent is saved (``url_check``): the address, or the name and what it resolves to there;
- when a worker connects (``create_connection``, and the httpx transport in
  ``inference.outbound_http``): the name is resolved once, every address it resolves to is checked,
  and the socket is opened to one of those checked addresses, never to the name again, so a DNS
  answer that changes between the check and the connection (DNS rebinding) cannot slip in.

The policy. An empty list (the default) allows any host except the addresses in
``REFUSED_NETWORKS``: the local link (169.254.0.0/16, where cloud metadata services answer, and
fe80::/10), other cloud metadata addresses, and addresses that name no single host. Loopback and
private networks stay allowed: llama.cpp's server on the same machine, a compose service or a
GPU server on the LAN are the usual model servers. A non-empty list allows only the hosts it names:
a host name, ``*.example.com`` for the subdomains of one, an address, a CIDR range, or ``*`` for
any host. A refused address stays refused unless an address or range in the list covers it.
"""

from __future__ import annotations

import http.client
import ipaddress
import re
import socket
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from inference.backends.base import BackendError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

SETTING = "OUTBOUND_ALLOWED_HOSTS"
# No model server lives at these; allowed only by an address or a range listed in the setting.
REFUSED_NETWORKS: tuple[tuple[Network, str], ...] = tuple(
    (ipaddress.ip_network(network), why)
    for network, why in (
        ("169.254.0.0/16", "link-local (cloud metadata services answer there)"),
        ("fe80::/10", "link-local"),
        ("fd00:ec2::254/128", "a cloud metadata address (AWS)"),
        ("100.100.100.200/32", "a cloud metadata address (Alibaba Cloud)"),
        ("168.63.129.16/32", "a cloud platform address (Azure)"),
        ("0.0.0.0/8", "unspecified"),
        ("::/128", "unspecified"),
        ("224.0.0.0/4", "multicast"),
        ("ff00::/8", "multicast"),
        ("255.255.255.255/32", "broadcast"),
    )
)
# IPv6 addresses that carry an IPv4 one: the IPv4 address is where they lead.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_LABEL = r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?"
_HOST_NAME = re.compile(rf"^(\*\.)?{_LABEL}(\.{_LABEL})*$")


class OutboundRefused(BackendError):
    """A host the policy does not allow. Users read the plain message; ``detail`` says which and why."""

    def __init__(self, detail: str) -> None:
        super().__init__(
            "The agent's model server is at an address this platform does not connect to. "
            "An administrator can see the details.",
            detail=detail,
        )


@dataclass(frozen=True)
class Policy:
    any_host: bool  # the list is empty or has "*"
    names: frozenset[str]
    suffixes: tuple[str, ...]  # ".example.com" for "*.example.com"
    networks: tuple[Network, ...]

    def names_host(self, host: str) -> bool:
        """Whether the list allows this host by name (its addresses are checked apart)."""
        return self.any_host or host in self.names or host.endswith(self.suffixes)

    def covers(self, address: Address) -> bool:
        """Whether an address or range in the list covers ``address``."""
        return any(address in network or _carried(address) in network for network in self.networks)


def policy() -> Policy:
    """The policy of ``OUTBOUND_ALLOWED_HOSTS``; raises ImproperlyConfigured naming a bad entry."""
    return _parse(tuple(settings.OUTBOUND_ALLOWED_HOSTS))


@lru_cache(maxsize=8)
def _parse(entries: tuple[str, ...]) -> Policy:
    any_host = not entries
    names: set[str] = set()
    suffixes: list[str] = []
    networks: list[Network] = []
    for raw in entries:
        entry = _normalized(raw)
        if entry == "*":
            any_host = True
            continue
        try:
            networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            continue
        except ValueError:
            pass
        if not _HOST_NAME.match(entry):
            raise ImproperlyConfigured(f"{SETTING}: {raw!r} is no host name, *.domain, IP address, CIDR range or *")
        if entry.startswith("*."):
            suffixes.append(entry[1:])
        else:
            names.add(entry)
    return Policy(any_host, frozenset(names), tuple(suffixes), tuple(networks))


def host_check(host: str, addresses: Iterable[Address]) -> None:
    """Raise OutboundRefused unless the policy allows ``host`` at every one of ``addresses``."""
    allowed = policy()
    found = list(addresses)
    if not allowed.names_host(_normalized(host)):
        outside = [str(a) for a in found if not allowed.covers(a)]
        if outside or not found:
            where = f" ({', '.join(outside)})" if outside else ""
            raise OutboundRefused(f"{host}{where} is not in {SETTING}")
    for address in found:
        if allowed.covers(address):
            continue  # listed explicitly: the operator means it, refused range or not
        for network, why in REFUSED_NETWORKS:
            if _carried(address) in network:
                what = host if _address(host) is not None else f"{host} resolves to {address}, which"
                raise OutboundRefused(f"{what} is {why}; list the address in {SETTING} to allow it")


def url_check(url: str) -> None:
    """Raise OutboundRefused unless the policy allows the host of ``url`` (for saving an agent).

    A name is resolved here. One that does not resolve here passes when the policy allows it by
    name: a worker may resolve names this process cannot, and it checks their addresses itself.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise OutboundRefused(f"{parts.scheme or 'a URL without a scheme'}: only http and https are fetched")
    host = parts.hostname
    if not host:
        raise OutboundRefused("the URL names no host")
    literal = _address(host)
    if literal is not None:
        host_check(host, [literal])
        return
    try:
        found = _resolve(host, parts.port or (443 if parts.scheme == "https" else 80))
    except OSError:
        if policy().names_host(_normalized(host)):
            return
        raise OutboundRefused(f"{host} does not resolve here and {SETTING} does not name it") from None
    host_check(host, found)


def addresses_allowed(host: str, port: int) -> list[Address]:
    """Every address ``host`` resolves to, once the policy allows each; raises OutboundRefused.

    Connect to these addresses, not to the name: a second lookup may answer differently.
    """
    literal = _address(host)
    found = [literal] if literal is not None else _resolve(host, port)
    host_check(host, found)
    return found


def create_connection(
    address: tuple[str, int], timeout: Any = None, source_address: tuple[str, int] | None = None
) -> socket.socket:
    """``socket.create_connection`` to an allowed host only, connecting to the checked addresses."""
    host, port = address
    error: OSError | None = None
    for allowed in addresses_allowed(host, port):
        family = socket.AF_INET6 if allowed.version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            if timeout is None or isinstance(timeout, int | float):  # else http.client's "default"
                sock.settimeout(timeout)
            if source_address is not None:
                sock.bind(source_address)
            sock.connect((str(allowed), port))
            return sock
        except OSError as exc:
            sock.close()
            error = exc
    raise error or OSError(f"{host} resolves to no address")


def proxied(url: str) -> bool:
    """Whether a request to ``url`` goes through a proxy named in the environment (HTTP_PROXY, ...)."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    return bool(proxy) and not urllib.request.proxy_bypass(parts.netloc)


def url_opener() -> urllib.request.OpenerDirector:
    """A urllib opener that connects directly (no proxy), and only where the policy allows."""
    return urllib.request.build_opener(urllib.request.ProxyHandler({}), _GuardedHTTPHandler, _GuardedHTTPSHandler)


class _GuardedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._create_connection = create_connection


class _GuardedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._create_connection = create_connection


class _GuardedHTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_GuardedHTTPConnection, req)


class _GuardedHTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_GuardedHTTPSConnection, req, context=getattr(self, "_context", None))


def _resolve(host: str, port: int) -> list[Address]:
    found: list[Address] = []
    for *_, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        address = ipaddress.ip_address(sockaddr[0])
        if address not in found:
            found.append(address)
    return found


def _address(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _carried(address: Address) -> Address:
    """The IPv4 address an IPv4-mapped or NAT64 IPv6 address leads to; others as they are."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def _normalized(host: str) -> str:
    return host.strip().lower().rstrip(".")
