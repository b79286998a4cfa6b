from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from rest_framework import permissions, viewsets
from rest_framework.request import Request

from agents.models import Agent
from agents.selectors import agent_list_for_user
from agents.serializers import AgentPublicSerializer, AgentSerializer


class AgentPermissions(permissions.DjangoModelPermissions):
    """Reading is for every signed-in user (the queryset holds the agents each may use). Writing
    asks what the admin asks: staff, and Django's model permission for the method (POST
    ``agents.add_agent``, PUT/PATCH ``agents.change_agent``, DELETE ``agents.delete_agent``;
    superusers hold them all). Without it: 403 naming the permission."""

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        if request.method in permissions.SAFE_METHODS:
            return True
        needed = self.get_required_permissions(request.method or "", Agent)
        if not user.is_staff:
            self.message = "Only staff may create, change or delete agents."
            return False
        if not user.has_perms(needed):
            self.message = f"You need the permission {', '.join(needed)} to do this; ask an administrator."
            return False
        return True


class AgentViewSet(viewsets.ModelViewSet):
    """Agents: every user lists those they may use; staff with the model permissions create, edit
    and delete (see AgentPermissions)."""

    permission_classes = [AgentPermissions]
    lookup_field = "slug"

    def get_queryset(self) -> QuerySet[Agent]:
        return agent_list_for_user(user=self.request.user, include_inactive=True).order_by("name")

    def get_serializer_class(self) -> type:
        if self.request.user.is_staff:
            return AgentSerializer
        return AgentPublicSerializer
