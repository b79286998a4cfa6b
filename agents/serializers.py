from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import models
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from agents.models import Agent, ToolServer
from inference.backends.registry import backend_for_format
from inference.models import ModelArtifact


class StrictCharField(serializers.CharField):
    """A string and nothing else: DRF's CharField would store the number 5 as the text "5"."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return str(super().to_internal_value(data))


class StrictSlugField(StrictCharField, serializers.SlugField):
    pass


class AgentSerializer(serializers.ModelSerializer):
    serializer_field_mapping = {
        **serializers.ModelSerializer.serializer_field_mapping,
        models.CharField: StrictCharField,
        models.TextField: StrictCharField,
        models.SlugField: StrictSlugField,
    }
    model = serializers.PrimaryKeyRelatedField(queryset=ModelArtifact.objects.all(), allow_null=True, required=False)
    model_name = serializers.CharField(source="model.name", read_only=True, default=None)
    queue = serializers.CharField(read_only=True)
    api_key = StrictCharField(write_only=True, required=False, allow_blank=True, style={"input_type": "password"})
    has_api_key = serializers.SerializerMethodField()
    tools = serializers.ListField(
        child=StrictCharField(),
        required=False,
        help_text='Built-in tools by name ("calculator") and tool servers\' tools as "<server>.<tool>".',
    )

    class Meta:
        model = Agent
        fields = [
            "id", "name", "slug", "description", "avatar_emoji", "avatar_image", "system_prompt",
            "backend", "model", "model_name", "backend_options", "api_key", "has_api_key",
            "temperature", "top_p", "max_tokens", "repetition_penalty", "stop", "context_window",
            "reasoning", "max_prompt_chars", "tools", "tool_choice", "max_tool_steps", "node", "queue",
            "is_active", "visibility", "allowed_users", "allowed_groups", "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = ["avatar_image", "created_at", "updated_at"]

    def get_has_api_key(self, obj: Agent) -> bool:
        return bool(obj.api_key)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        m2m = {k: attrs.pop(k) for k in ("allowed_users", "allowed_groups") if k in attrs}
        model = attrs.get("model")
        if self.instance is None and "backend" not in self.initial_data and model is not None:
            # An agent made from an artifact runs on the backend for its format (GGUF: llama_cpp).
            backend = backend_for_format(model.format)
            if backend is None:
                raise serializers.ValidationError(
                    {"model": [f"No backend serves a {model.get_format_display()} artifact; pick a servable one."]}
                )
            attrs["backend"] = backend
            if model.context_length and "context_window" not in self.initial_data:
                attrs["context_window"] = min(model.context_length, 8192)
        instance = Agent(**{**self._current(), **attrs})
        try:
            instance.clean()
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.message_dict) from None
        attrs.update(m2m)
        return attrs

    def _current(self) -> dict[str, Any]:
        if self.instance is None:
            return {}
        fields = [f.name for f in Agent._meta.concrete_fields if f.name != "id"]
        return {f: getattr(self.instance, f) for f in fields}


class AgentPublicSerializer(serializers.ModelSerializer):
    """What a non-staff user sees: enough to pick an agent, nothing about its secrets."""

    model_name = serializers.CharField(source="model.name", read_only=True, default=None)
    tools = serializers.ListField(child=serializers.CharField(), read_only=True)

    class Meta:
        model = Agent
        fields = [
            "id", "name", "slug", "description", "avatar_emoji", "avatar_image", "backend",
            "model_name", "node", "context_window", "max_tokens", "max_prompt_chars", "tools",
        ]  # fmt: skip
        read_only_fields = fields


class ToolSerializer(serializers.Serializer):
    """One discovered tool, as the model is told of it."""

    name = serializers.CharField()
    description = serializers.CharField(allow_blank=True)
    input_schema = serializers.DictField(help_text="The JSON schema of the tool's arguments.")


class ToolServerSerializer(serializers.ModelSerializer):
    """A tool server. ``env`` and ``headers`` are write-only (they may hold secrets): a response
    names the keys that are set (``env_keys``, ``header_keys``), never their values."""

    serializer_field_mapping = {
        **serializers.ModelSerializer.serializer_field_mapping,
        models.CharField: StrictCharField,
        models.SlugField: StrictSlugField,
    }
    command = serializers.ListField(
        child=StrictCharField(), required=False, help_text='stdio: the command and its arguments: ["npx", "-y", "pkg"].'
    )
    env = serializers.DictField(
        child=StrictCharField(allow_blank=True), required=False, write_only=True, help_text="stdio: added variables."
    )
    headers = serializers.DictField(
        child=StrictCharField(allow_blank=True), required=False, write_only=True, help_text="http: request headers."
    )
    env_keys = serializers.SerializerMethodField()
    header_keys = serializers.SerializerMethodField()
    tools = ToolSerializer(many=True, read_only=True)

    class Meta:
        model = ToolServer
        fields = [
            "id", "name", "transport", "command", "env", "env_keys", "url", "headers", "header_keys",
            "timeout_seconds", "tools", "discovered_at", "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = ["discovered_at", "created_at", "updated_at"]

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_env_keys(self, obj: ToolServer) -> list[str]:
        return sorted(obj.env or {})

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_header_keys(self, obj: ToolServer) -> list[str]:
        return sorted(obj.headers or {})
