"""API tokens: create (the secret is returned once), authenticate by hash, revoke."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from sessions_app import broadcast
from sessions_app.models import ApiToken

PREFIX = "cs_"


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def token_create(*, user: Any, name: str, expires_at: datetime | None = None) -> tuple[ApiToken, str]:
    """Make a token; return it with its secret, which is not stored and cannot be shown again."""
    secret = PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user, name=name.strip()[:100] or "token", prefix=secret[:10], key_hash=_hash(secret), expires_at=expires_at
    )
    return token, secret


def token_for_job(user: Any, name: str) -> tuple[str, Callable[[], None]]:
    """A token for a job that calls the platform as ``user`` (a benchmark): its secret, and how to
    revoke it when the job ends. It expires after a day in any case."""
    token, secret = token_create(user=user, name=name, expires_at=timezone.now() + timedelta(days=1))
    return secret, lambda: token_revoke(token=token)


def token_list_for_user(*, user: Any) -> QuerySet[ApiToken]:
    return ApiToken.objects.filter(user=user, revoked_at__isnull=True)


def token_revoke(*, token: ApiToken) -> None:
    """Stop the token working now: requests fail at once, and its open websockets are closed."""
    ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    broadcast.group_send(token.group_name, {"type": "token.revoked"})


def token_authenticate(secret: str) -> ApiToken | None:
    """The usable token with this secret, or None. Marks it used (at most once a minute)."""
    if not secret:
        return None
    token = ApiToken.objects.select_related("user").filter(key_hash=_hash(secret)).first()
    now = timezone.now()
    if token is None or not token.is_usable(now) or not token.user.is_active:
        return None
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token


SCHEMES = ("token", "bearer")


class TokenRejected(Exception):
    """An ``Authorization`` header that names no usable token; ``code`` is machine-readable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def token_from_header(header: str | bytes | None) -> ApiToken | None:
    """The token an ``Authorization`` header carries: ``Token <secret>`` or ``Bearer <secret>``.

    None when there is no header (the caller may fall back to the session cookie); raises
    TokenRejected for any other scheme or a bad, expired or revoked secret, which must never
    fall back to a cookie. Every door (REST, SSE, /v1, websocket) parses the header here.
    """
    if isinstance(header, bytes):
        header = header.decode("latin-1")
    header = (header or "").strip()
    if not header:
        return None
    scheme, _, secret = header.partition(" ")
    if scheme.lower() not in SCHEMES:
        raise TokenRejected("invalid_api_key", "Send your API token as 'Authorization: Bearer <token>'.")
    token = token_authenticate(secret.strip())
    if token is None:
        raise TokenRejected("invalid_api_key", "Invalid, expired or revoked token.")
    return token


class ApiTokenAuthentication(authentication.BaseAuthentication):
    """``Authorization: Token <secret>`` or ``Authorization: Bearer <secret>`` (OpenAI clients)."""

    def authenticate(self, request: Request) -> tuple[Any, ApiToken] | None:
        header = authentication.get_authorization_header(request)
        scheme = header.split(b" ", 1)[0].decode("latin-1").lower()
        if header and scheme not in SCHEMES:
            return None  # another scheme: left to the other authentication classes
        try:
            token = token_from_header(header)
        except TokenRejected as exc:
            raise exceptions.AuthenticationFailed(exc.message) from None
        return (token.user, token) if token is not None else None

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'
