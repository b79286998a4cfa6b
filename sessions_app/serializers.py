from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from agents.serializers import StrictCharField, StrictSlugField
from sessions_app.models import Message, Session
from sessions_app.params import ReplyParams
from sessions_app.selectors import message_payload_live, participant_slugs


class SessionOutputSerializer(serializers.ModelSerializer):
    agent = serializers.SlugRelatedField(slug_field="slug", read_only=True, help_text="The default agent.")
    agents = serializers.SerializerMethodField(help_text="The participants' slugs, in order; the first is the default.")
    turn_policy = serializers.JSONField(help_text="Who answers a message: manual, round_robin or debate.")
    consulted_by = serializers.PrimaryKeyRelatedField(
        read_only=True,
        help_text="A consultation (an agent's ask_agent call): the reply that asked; null for your own chats.",
    )

    class Meta:
        model = Session
        fields = [
            "id",
            "title",
            "agent",
            "agents",
            "turn_policy",
            "archived",
            "consulted_by",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_agents(self, session: Session) -> list[str]:
        return participant_slugs(session)


_AGENTS_HELP = "Participants' slugs in order (the first is the default agent), 1 to 8."
_POLICY_HELP = (
    '{"kind": "manual"} (@slug mentions answer, else the default agent), '
    '{"kind": "round_robin", "rounds": N} or {"kind": "debate", "rounds": N, "judge": "slug"}.'
)


# Input fields take strings only (StrictCharField): DRF's CharField would take 5 for "5".


class SessionCreateSerializer(serializers.Serializer):
    title = StrictCharField(max_length=200, required=False, allow_blank=True, default="")
    agent = StrictSlugField(required=False, help_text="Slug of the agent that answers (one agent).")
    agents = serializers.ListField(
        child=StrictSlugField(), min_length=1, max_length=8, required=False, help_text=_AGENTS_HELP
    )
    turn_policy = serializers.JSONField(required=False, help_text=_POLICY_HELP)


class SessionUpdateSerializer(serializers.Serializer):
    title = StrictCharField(max_length=200, required=False, allow_blank=True)
    archived = serializers.BooleanField(required=False)
    agents = serializers.ListField(
        child=StrictSlugField(), min_length=1, max_length=8, required=False, help_text=_AGENTS_HELP
    )
    turn_policy = serializers.JSONField(required=False, help_text=_POLICY_HELP)


class StatsSerializer(serializers.Serializer):
    prompt_tokens = serializers.IntegerField(allow_null=True)
    completion_tokens = serializers.IntegerField(allow_null=True)
    ttft_ms = serializers.FloatField(allow_null=True)
    decode_tps = serializers.FloatField(allow_null=True)
    reasoning_tokens = serializers.IntegerField(
        allow_null=True, help_text="Tokens of a reasoning model's thinking (null: the agent does not reason)."
    )


class ToolCallSerializer(serializers.Serializer):
    id = serializers.CharField()
    name = serializers.CharField(help_text="The tool: a built-in's name, or <server>.<tool>.")
    arguments = serializers.CharField(help_text="The arguments the model gave, as JSON text.")
    result = serializers.CharField(allow_blank=True, help_text="What the tool answered (cut to 8,000 characters).")
    error = serializers.CharField(allow_blank=True, help_text="Why the call failed; the model read it as the result.")
    status = serializers.ChoiceField(choices=["running", "ok", "error", "cancelled"])
    duration_ms = serializers.IntegerField()


class MessageOutputSerializer(serializers.Serializer):
    """A message as every door shows it: ``selectors.message_payload`` is the one shape (websocket
    and SSE events, REST, the export); these fields only describe it for the OpenAPI schema."""

    id = serializers.IntegerField()
    session = serializers.IntegerField()
    role = serializers.ChoiceField(choices=Message.Role.choices)
    agent = serializers.CharField(allow_null=True, help_text="The answering agent's slug.")
    agent_name = serializers.CharField(allow_null=True)
    agent_avatar = serializers.CharField(allow_null=True, help_text="The agent's emoji, or its image's URL.")
    reply_to = serializers.IntegerField(allow_null=True)
    turn = serializers.IntegerField(help_text="A reply's place among the replies to its user message, from 1.")
    compare = serializers.BooleanField(help_text="A reply of a compare (shown side by side with the others).")
    picked = serializers.BooleanField(help_text="The compare reply the user picked as the best.")
    content = serializers.CharField(allow_blank=True, help_text="The answer, without any thinking.")
    reasoning = serializers.CharField(
        allow_blank=True, help_text="A reasoning model's thinking, kept apart from the answer and out of later prompts."
    )
    reasoning_ms = serializers.IntegerField(allow_null=True, help_text="How long the thinking lasted, in ms.")
    tool_calls = ToolCallSerializer(
        many=True, help_text="The agent's tool calls on the way to this reply, in order, each stored as it finishes."
    )
    status = serializers.ChoiceField(choices=Message.Status.choices)
    error = serializers.CharField(allow_blank=True)
    client_id = serializers.CharField(allow_null=True)
    seq = serializers.IntegerField()
    backend = serializers.CharField(allow_blank=True)
    model = serializers.CharField(allow_blank=True, help_text="The model artifact's name.")
    finish_reason = serializers.CharField(allow_blank=True)
    stats = StatsSerializer()
    created_at = serializers.DateTimeField(allow_null=True)
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)

    def to_representation(self, instance: Message) -> dict[str, Any]:
        return message_payload_live(instance)


@extend_schema_field(ReplyParams.model_json_schema())
class ReplyParamsField(serializers.JSONField):
    """Taken as sent: ``sessions_app.params`` checks it (the websocket's rules and messages), once
    the agent whose ``max_tokens`` caps it is known."""


class MessageCreateSerializer(serializers.Serializer):
    content = StrictCharField(trim_whitespace=False)
    client_id = StrictCharField(max_length=100, required=False)
    agent = StrictSlugField(required=False)
    params = ReplyParamsField(
        required=False, help_text="This reply's settings (the agent's fill the rest); not with compare."
    )
    compare = serializers.ListField(
        child=StrictSlugField(),
        min_length=2,
        max_length=4,
        required=False,
        help_text="2 to 4 agents that all answer this message side by side; pick the best afterwards.",
    )


class PickOutputSerializer(serializers.Serializer):
    reply_to = serializers.IntegerField(help_text="The user message whose replies were compared.")
    picked = serializers.IntegerField(help_text="The reply picked as the best.")
    agent = serializers.CharField(allow_null=True)


class LeaderboardRowSerializer(serializers.Serializer):
    agent = serializers.CharField()
    name = serializers.CharField()
    rating = serializers.FloatField(help_text="Bradley–Terry rating on an Elo-like scale (1000 = average).")
    rating_low = serializers.FloatField(
        allow_null=True, help_text="95 % bootstrap interval, low end (null: too few picks)."
    )
    rating_high = serializers.FloatField(allow_null=True, help_text="95 % bootstrap interval, high end.")
    wins = serializers.IntegerField()
    losses = serializers.IntegerField()
    battles = serializers.IntegerField()


class MessageEditSerializer(serializers.Serializer):
    content = StrictCharField(trim_whitespace=False)
