from __future__ import annotations

from django.contrib import admin

from inference.models import ModelArtifact


@admin.register(ModelArtifact)
class ModelArtifactAdmin(admin.ModelAdmin):
    list_display = ["name", "format", "quantization", "parent", "size_bytes", "created_at"]
    list_filter = ["format", "quantization"]
    search_fields = ["name", "path", "url", "notes"]
    autocomplete_fields = ["parent"]
    readonly_fields = ["created_at", "lineage_display"]

    @admin.display(description="Lineage")
    def lineage_display(self, obj: ModelArtifact) -> str:
        return " → ".join(a.name for a in obj.lineage()) if obj.pk else ""
