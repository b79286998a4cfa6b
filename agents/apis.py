from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from rest_framework import permissions, viewsets
from rest_framework.request import Request

from agents.models import Agent
from agents.selectors import agent_list_for_user
from agents.serializers import AgentPublicSerializer, AgentSerializer


class IsStaffOrReadOnly(permissions.BasePermission):
    def has_permission(self, request: Request, view: Any) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False
        return request.method in permissions.SAFE_METHODS or bool(request.user.is_staff)


class AgentViewSet(viewsets.ModelViewSet):
    """Agents: every user lists those they may use; staff create, edit and delete."""

    permission_classes = [IsStaffOrReadOnly]
    lookup_field = "slug"

    def get_queryset(self) -> QuerySet[Agent]:
        return agent_list_for_user(user=self.request.user, include_inactive=True).order_by("name")

    def get_serializer_class(self) -> type:
        if self.request.user.is_staff:
            return AgentSerializer
        return AgentPublicSerializer
