"""The openai client's transport, connecting only where ``OUTBOUND_ALLOWED_HOSTS`` allows.

The openai client sends through httpx2 (the HTTP library openai 3 depends on), and httpx2 through
httpcore2, whose network backend opens the sockets. This backend resolves the host once, checks
every address (``inference.outbound``), and connects to the checked addresses; TLS still verifies
the certificate against the host name, which httpcore2 passes apart. A client given a transport
ignores the proxies named in the environment, so a server reached through one is not given this
transport (``inference.outbound.proxied``): the proxy connects, and the backend checked the target
when it loaded (``inference.outbound.url_check``).

Imported when a backend loads, not with the backend module: the web processes never need it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import httpcore2
import httpx2

from inference import outbound


class GuardedNetwork(httpcore2.SyncBackend):
    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.NetworkStream:
        try:
            addresses = outbound.addresses_allowed(host, port)
        except OSError as exc:  # the name does not resolve
            raise httpcore2.ConnectError(str(exc)) from exc
        error: httpcore2.ConnectError | None = None
        for address in addresses:
            try:
                return super().connect_tcp(
                    str(address), port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except httpcore2.ConnectError as exc:
                error = exc
        raise error or httpcore2.ConnectError(f"{host} resolves to no address")


class GuardedTransport(httpx2.HTTPTransport):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # httpx2 takes no network backend of its own; its pool has made no connection yet, so the
        # one set here opens every connection this transport makes.
        self._pool._network_backend = GuardedNetwork()


def guarded_client() -> httpx2.Client:
    """The openai client's default HTTP client (its limits, timeouts, redirects), on this transport.

    Every redirect is a new connection through the transport, so it is checked too.
    """
    import openai

    # openai's own connection limits: many replies share one client.
    limits = httpx2.Limits(max_connections=1000, max_keepalive_connections=100)
    return openai.DefaultHttpxClient(transport=GuardedTransport(limits=limits))
