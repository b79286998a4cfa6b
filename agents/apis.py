from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, permissions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from agents.models import Agent, ToolServer
from agents.selectors import agent_list_for_user
from agents.serializers import AgentPublicSerializer, AgentSerializer, ToolServerSerializer
from agents.tool_servers import tool_server_refresh, tool_server_save


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


class ToolServerPermissions(permissions.BasePermission):
    """Staff only, for reading too (a server's command and URL say where the platform reaches).
    Registering asks ``agents.add_toolserver`` and refreshing ``agents.change_toolserver``, as the
    admin does: a stdio server is a command the platform runs."""

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        if not user.is_staff:
            self.message = "Only staff may see or define tool servers."
            return False
        needed = {"create": "agents.add_toolserver", "refresh": "agents.change_toolserver"}.get(view.action or "")
        if needed and not user.has_perm(needed):
            self.message = f"You need the permission {needed} to do this; ask an administrator."
            return False
        return True


def _drf_error(exc: DjangoValidationError) -> serializers.ValidationError:
    return serializers.ValidationError(exc.message_dict if hasattr(exc, "error_dict") else exc.messages)


class ToolServerViewSet(
    mixins.ListModelMixin, mixins.CreateModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """MCP tool servers (staff): registering one discovers its tools first; a server that cannot
    start or answer is not saved (400 with the reason). ``refresh`` asks it for its tools again."""

    permission_classes = [ToolServerPermissions]
    serializer_class = ToolServerSerializer
    queryset = ToolServer.objects.order_by("name")

    def perform_create(self, serializer: Any) -> None:
        try:
            serializer.instance = tool_server_save(server=ToolServer(**serializer.validated_data))
        except DjangoValidationError as exc:
            raise _drf_error(exc) from None

    @extend_schema(request=None, responses={200: ToolServerSerializer})
    @action(detail=True, methods=["post"])
    def refresh(self, request: Request, pk: str | None = None) -> Response:
        server = self.get_object()
        try:
            server = tool_server_refresh(server=server)
        except DjangoValidationError as exc:
            raise _drf_error(exc) from None
        return Response(self.get_serializer(server).data, status=status.HTTP_200_OK)
