from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from sessions_app.models import ApiToken, Message, Session
from sessions_app.tokens import token_revoke


class MessageInline(admin.TabularInline):
    model = Message
    fields = ("role", "agent", "status", "content", "completion_tokens", "ttft_ms", "decode_tps", "created_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Session)
class SessionAdmin(admin.ModelAdmin):
    """Read-mostly: an admin may rename or archive a session, not rewrite what was said."""

    list_display = ["id", "title", "owner", "agent", "archived", "updated_at"]
    list_filter = ["archived", "agent"]
    search_fields = ["title", "owner__username", "messages__content"]
    readonly_fields = ["owner", "agent", "agents", "created_at", "updated_at"]
    inlines = [MessageInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ["id", "session", "role", "agent", "status", "completion_tokens", "decode_tps", "created_at"]
    list_filter = ["status", "role", "backend"]
    search_fields = ["content", "session__title"]
    list_select_related = ["session", "agent"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Tokens are made by their users (web UI, API); here an admin sees and revokes them."""

    list_display = ["name", "user", "prefix", "created_at", "last_used_at", "expires_at", "revoked_at"]
    list_filter = ["revoked_at"]
    search_fields = ["name", "user__username", "prefix"]
    readonly_fields = ["user", "name", "prefix", "created_at", "last_used_at", "expires_at", "revoked_at"]
    exclude = ["key_hash"]
    actions = ["revoke"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Revoke the selected tokens now")
    def revoke(self, request: HttpRequest, queryset: Any) -> None:
        for token in queryset.filter(revoked_at__isnull=True):
            token_revoke(token=token)
