"""The job dashboard's socket (``/ws/jobs/``) lives no longer than the API token it was opened
with, as the chat socket does: revoking the token, or its expiry, sends a ``token_revoked`` error
event and closes the socket with 4401."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.utils import timezone

from sessions_app.models import ApiToken
from sessions_app.tokens import token_create, token_revoke

pytestmark = pytest.mark.django_db(transaction=True)


async def _open(secret: str) -> WebsocketCommunicator:
    from chatsite.asgi import application

    ws = WebsocketCommunicator(application, "/ws/jobs/", headers=[(b"authorization", f"Token {secret}".encode())])
    connected, _ = await ws.connect()
    assert connected
    await ws.send_json_to({"type": "ping"})
    assert await ws.receive_json_from(5) == {"type": "pong"}  # open, and past connect()
    return ws


async def _closed_for_the_token(ws: WebsocketCommunicator, within: float) -> None:
    event = await ws.receive_json_from(within)
    assert event["type"] == "error" and event["code"] == "token_revoked", event
    closed = await ws.receive_output(5)
    assert closed == {"type": "websocket.close", "code": 4401}, closed


def test_revoking_the_token_closes_the_jobs_socket(staff: User) -> None:
    token, secret = token_create(user=staff, name="dashboard")

    async def run() -> None:
        ws = await _open(secret)
        await database_sync_to_async(token_revoke)(token=token)
        await _closed_for_the_token(ws, within=5)

    asyncio.run(run())
    assert ApiToken.objects.get(pk=token.pk).revoked_at is not None


def test_the_jobs_socket_closes_when_its_token_expires(staff: User) -> None:
    token, secret = token_create(user=staff, name="short", expires_at=timezone.now() + timedelta(seconds=2))

    async def run() -> float:
        ws = await _open(secret)
        started = asyncio.get_running_loop().time()
        await _closed_for_the_token(ws, within=10)
        return asyncio.get_running_loop().time() - started

    waited = asyncio.run(run())
    assert waited < 5, waited


def test_a_socket_opened_with_another_token_stays_open(staff: User) -> None:
    kept, kept_secret = token_create(user=staff, name="kept")
    revoked, _ = token_create(user=staff, name="revoked")

    async def run() -> None:
        ws = await _open(kept_secret)
        await database_sync_to_async(token_revoke)(token=revoked)
        await ws.send_json_to({"type": "ping"})
        assert await ws.receive_json_from(5) == {"type": "pong"}
        await ws.disconnect()

    asyncio.run(run())
    assert kept.pk != revoked.pk
