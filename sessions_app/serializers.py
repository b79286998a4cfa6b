from __future__ import annotations

from rest_framework import serializers

from sessions_app.models import Message, Session


class SessionOutputSerializer(serializers.ModelSerializer):
    agent = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    agents = serializers.SlugRelatedField(slug_field="slug", read_only=True, many=True)

    class Meta:
        model = Session
        fields = ["id", "title", "agent", "agents", "archived", "created_at", "updated_at"]
        read_only_fields = fields


class SessionCreateSerializer(serializers.Serializer):
    title = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    agent = serializers.SlugField(required=False, help_text="Slug of the agent that answers.")


class SessionUpdateSerializer(serializers.Serializer):
    title = serializers.CharField(max_length=200, required=False, allow_blank=True)
    archived = serializers.BooleanField(required=False)


class StatsSerializer(serializers.Serializer):
    prompt_tokens = serializers.IntegerField(allow_null=True)
    completion_tokens = serializers.IntegerField(allow_null=True)
    ttft_ms = serializers.FloatField(allow_null=True)
    decode_tps = serializers.FloatField(allow_null=True)


class MessageOutputSerializer(serializers.ModelSerializer):
    agent = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    stats = serializers.SerializerMethodField()

    class Meta:
        model = Message
        fields = [
            "id", "session", "role", "agent", "reply_to", "content", "status", "error", "client_id",
            "seq", "backend", "model_name", "finish_reason", "stats", "created_at", "started_at", "finished_at",
        ]  # fmt: skip
        read_only_fields = fields

    def get_stats(self, obj: Message) -> dict[str, float | int | None]:
        return {
            "prompt_tokens": obj.prompt_tokens,
            "completion_tokens": obj.completion_tokens,
            "ttft_ms": obj.ttft_ms,
            "decode_tps": obj.decode_tps,
        }


class MessageCreateSerializer(serializers.Serializer):
    content = serializers.CharField(trim_whitespace=False)
    client_id = serializers.CharField(max_length=100, required=False)
    agent = serializers.SlugField(required=False)


class MessageEditSerializer(serializers.Serializer):
    content = serializers.CharField(trim_whitespace=False)
