from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import Field
from django.http import HttpRequest

from inference.formats import format_choices
from inference.models import ModelArtifact


@admin.register(ModelArtifact)
class ModelArtifactAdmin(admin.ModelAdmin):
    list_display = ["name", "format", "quantization", "parent", "size_bytes", "created_at"]
    list_filter = ["format", "quantization"]
    search_fields = ["name", "path", "url", "notes"]
    autocomplete_fields = ["parent"]
    readonly_fields = ["created_at", "lineage_display"]

    def formfield_for_dbfield(self, db_field: Field[Any, Any], request: HttpRequest, **kwargs: Any) -> Any:
        # The format column is open (inference.formats); the form offers the registered ones.
        if db_field.name == "format":
            return forms.ChoiceField(choices=format_choices(), label="Format")
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    @admin.display(description="Lineage")
    def lineage_display(self, obj: ModelArtifact) -> str:
        return " → ".join(a.name for a in obj.lineage()) if obj.pk else ""
