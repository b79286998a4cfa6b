"""The chat socket uses the same token binding as the job dashboard's (``sessions_app.socket_token``):
its token's expiry or revocation sends ``token_revoked`` and closes it with 4401."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.utils import timezone

from sessions_app.models import Session
from sessions_app.tokens import token_create, token_revoke

pytestmark = pytest.mark.django_db(transaction=True)


async def _open(session: Session, secret: str) -> WebsocketCommunicator:
    from chatsite.asgi import application

    headers = [(b"authorization", f"Token {secret}".encode())]
    ws = WebsocketCommunicator(application, f"/ws/sessions/{session.pk}/", headers=headers)
    connected, _ = await ws.connect()
    assert connected
    assert (await ws.receive_json_from(5))["type"] == "session"
    return ws


async def _closed_for_the_token(ws: WebsocketCommunicator, within: float) -> None:
    event = await ws.receive_json_from(within)
    assert event["type"] == "error" and event["code"] == "token_revoked", event
    assert await ws.receive_output(5) == {"type": "websocket.close", "code": 4401}


def test_the_chat_socket_closes_when_its_token_expires(user: User) -> None:
    session = Session.objects.create(owner=user)
    _, secret = token_create(user=user, name="short", expires_at=timezone.now() + timedelta(seconds=2))

    async def run() -> float:
        ws = await _open(session, secret)
        started = asyncio.get_running_loop().time()
        await _closed_for_the_token(ws, within=10)
        return asyncio.get_running_loop().time() - started

    assert asyncio.run(run()) < 5


def test_revoking_the_token_closes_the_chat_socket(user: User) -> None:
    session = Session.objects.create(owner=user)
    token, secret = token_create(user=user, name="cli")

    async def run() -> None:
        ws = await _open(session, secret)
        await database_sync_to_async(token_revoke)(token=token)
        await _closed_for_the_token(ws, within=5)

    asyncio.run(run())
