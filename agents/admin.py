from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest

from agents.models import Agent


class AgentAdminForm(forms.ModelForm):
    # Write-only: the stored key is never rendered back into the page.
    api_key = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="For OpenAI-compatible servers. Leave empty to keep the current key.",
    )
    clear_api_key = forms.BooleanField(required=False, help_text="Remove the stored key.")

    class Meta:
        model = Agent
        fields = "__all__"  # noqa: DJ007 - the fieldsets choose what shows

    def clean_api_key(self) -> str:
        value: str = self.cleaned_data.get("api_key") or ""
        if not value and self.instance.pk:
            return self.instance.api_key
        return value

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("clear_api_key"):
            data["api_key"] = ""
            self.instance.api_key = ""
        return data


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    form = AgentAdminForm
    list_display = ["avatar_emoji", "name", "slug", "backend", "model", "node", "is_active", "visibility"]
    list_display_links = ["name"]
    list_filter = ["backend", "is_active", "visibility", "node"]
    search_fields = ["name", "slug", "description"]
    prepopulated_fields = {"slug": ["name"]}
    autocomplete_fields = ["model"]
    filter_horizontal = ["allowed_users", "allowed_groups"]
    fieldsets = [
        (None, {"fields": ["name", "slug", "description", ("avatar_emoji", "avatar_image"), "system_prompt"]}),
        ("Model and backend", {"fields": ["backend", "model", "backend_options", "api_key", "clear_api_key"]}),
        (
            "Generation defaults",
            {
                "fields": [
                    ("temperature", "top_p"),
                    ("max_tokens", "context_window"),
                    "max_prompt_chars",
                    "repetition_penalty",
                    "stop",
                ]
            },
        ),
        (
            "Where it runs and who may use it",
            {"fields": ["node", "is_active", "visibility", "allowed_users", "allowed_groups"]},
        ),
    ]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return []
