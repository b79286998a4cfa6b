"""API tokens: create (the secret is returned once), authenticate by hash, revoke."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime
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


class ApiTokenAuthentication(authentication.BaseAuthentication):
    """``Authorization: Token <secret>`` or ``Authorization: Bearer <secret>`` (OpenAI clients)."""

    keywords = ("token", "bearer")

    def authenticate(self, request: Request) -> tuple[Any, ApiToken] | None:
        header = authentication.get_authorization_header(request).decode("latin-1").strip()
        if not header:
            return None
        scheme, _, secret = header.partition(" ")
        if scheme.lower() not in self.keywords:
            return None
        token = token_authenticate(secret.strip())
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid, expired or revoked token.")
        return token.user, token

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'
