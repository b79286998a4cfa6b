"""Writes of tool servers: a server is saved only with the tools it was just seen to offer.

Every door (the API, the admin form and its "refresh tools" action) saves through here, so no
door can leave a half-registered server: the checks run, then the server is asked for its tools
(``inference.tools.mcp.discover``, a short session of its own), and only then is the row written,
its tools with it. A server that cannot start or answer raises ``ValidationError`` with the clear
message of the ``ToolError``, and nothing is written.

Discovery runs in the web process, outside any database transaction (it may take up to the
server's timeout). A stdio server's command is started here too, with the same allowlisted
environment as on a worker.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from agents.models import ToolServer
from inference.outbound import OutboundRefused, url_check
from inference.tools.base import ToolError

logger = logging.getLogger(__name__)


def tool_server_url_check(url: str) -> None:
    """The outbound host policy for a tool server's URL, with the reason an administrator needs."""
    try:
        url_check(url)
    except OutboundRefused as exc:
        raise ToolError(f"OUTBOUND_ALLOWED_HOSTS refuses its URL ({exc.detail})") from None


def tool_server_discover(*, server: ToolServer) -> list[dict[str, Any]]:
    """The tools ``server`` offers now, as stored in ``ToolServer.tools``; ``ValidationError`` if it
    cannot be asked (the message says why). Checks the server's fields first: a command that is
    not a list of strings is never started."""
    server.full_clean(exclude=["tools", "discovered_at"], validate_unique=False)
    try:
        from inference.tools.mcp import discover  # the MCP SDK takes ~1.3 s to import: not at start-up

        tools = discover(server.spec(), url_check=tool_server_url_check)
    except ToolError as exc:
        logger.info("tool server %s: discovery failed: %s", server.name, exc)
        raise ValidationError(str(exc)) from None
    logger.info("tool server %s: %d tools discovered", server.name, len(tools))
    return [tool.as_json() for tool in tools]


def tool_server_save(*, server: ToolServer, tools: list[dict[str, Any]] | None = None) -> ToolServer:
    """Save ``server`` (new or changed) with its tools: those given, when a form has just discovered
    them, or discovered here. Nothing is saved when discovery fails (``ValidationError``)."""
    server.full_clean(exclude=["tools", "discovered_at"])
    if tools is None:
        tools = tool_server_discover(server=server)
    with transaction.atomic():
        server.tools = tools
        server.discovered_at = timezone.now()
        server.save()
    return server


def tool_server_refresh(*, server: ToolServer) -> ToolServer:
    """Ask ``server`` again for its tools and store them; the stored ones stay when it cannot answer."""
    tools = tool_server_discover(server=server)
    now = timezone.now()
    with transaction.atomic():
        ToolServer.objects.filter(pk=server.pk).update(tools=tools, discovered_at=now, updated_at=now)
    server.refresh_from_db()
    return server
