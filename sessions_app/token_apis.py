"""Token endpoints: log in for a token, and list / create / revoke your named tokens."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib.auth import authenticate
from django.http import Http404
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from agents.serializers import StrictCharField
from inference.errors import PlatformError
from sessions_app.models import ApiToken
from sessions_app.throttling import AnonThrottle
from sessions_app.tokens import token_create, token_list_for_user, token_revoke


class TokenCreateSerializer(serializers.Serializer):
    name = StrictCharField(max_length=100)
    expires_in_days = serializers.IntegerField(min_value=1, max_value=3650, required=False, allow_null=True)


class LoginSerializer(serializers.Serializer):
    username = StrictCharField()
    password = StrictCharField(style={"input_type": "password"}, trim_whitespace=False)
    name = StrictCharField(max_length=100, required=False, default="api login")
    expires_in_days = serializers.IntegerField(min_value=1, max_value=3650, required=False, allow_null=True)


class TokenOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = ApiToken
        fields = ["id", "name", "prefix", "created_at", "last_used_at", "expires_at"]
        read_only_fields = fields


class TokenCreatedSerializer(TokenOutputSerializer):
    token = serializers.CharField(help_text="The secret. Shown this once only.")

    class Meta(TokenOutputSerializer.Meta):
        fields = ["token", *TokenOutputSerializer.Meta.fields]
        read_only_fields = fields


def _created(token: ApiToken, secret: str) -> dict[str, Any]:
    return {"token": secret, **TokenOutputSerializer(token).data}


def _expiry(days: int | None) -> Any:
    return timezone.now() + timedelta(days=days) if days else None


class LoginApi(APIView):
    """Exchange a username and password for a new named token."""

    authentication_classes: list[type] = []
    permission_classes = [AllowAny]
    throttle_classes = [AnonThrottle]

    @extend_schema(request=LoginSerializer, responses={200: TokenCreatedSerializer})
    def post(self, request: Request) -> Response:
        data = LoginSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = authenticate(request, username=data.validated_data["username"], password=data.validated_data["password"])
        if user is None or not user.is_active:
            raise PlatformError("Wrong username or password.", code="invalid_credentials")
        token, secret = token_create(
            user=user, name=data.validated_data["name"], expires_at=_expiry(data.validated_data.get("expires_in_days"))
        )
        return Response(_created(token, secret))


class TokenListApi(APIView):
    @extend_schema(responses=TokenOutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        return Response(TokenOutputSerializer(token_list_for_user(user=request.user), many=True).data)

    @extend_schema(request=TokenCreateSerializer, responses={201: TokenCreatedSerializer})
    def post(self, request: Request) -> Response:
        data = TokenCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        token, secret = token_create(
            user=request.user,
            name=data.validated_data["name"],
            expires_at=_expiry(data.validated_data.get("expires_in_days")),
        )
        return Response(_created(token, secret), status=status.HTTP_201_CREATED)


class TokenDetailApi(APIView):
    @extend_schema(responses={204: None})
    def delete(self, request: Request, token_id: int) -> Response:
        token = token_list_for_user(user=request.user).filter(pk=token_id).first()
        if token is None:
            raise Http404("No such token.")
        token_revoke(token=token)
        return Response(status=status.HTTP_204_NO_CONTENT)
