from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q


def default_turn_policy() -> dict[str, Any]:
    return {"kind": "manual"}


class Session(models.Model):
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="chat_sessions")
    title = models.CharField(max_length=200, blank=True, default="")
    agent = models.ForeignKey(
        "agents.Agent",
        null=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The agent that answers when a message names none.",
    )
    agents: models.ManyToManyField[Any, Any] = models.ManyToManyField(
        "agents.Agent",
        through="Participant",
        blank=True,
        related_name="sessions",
        help_text="The agents taking part, in order (``Participant.position``).",
    )
    turn_policy = models.JSONField(
        default=default_turn_policy,
        help_text="Who answers a user message: sessions_app.turns (manual, round_robin, supervisor, debate).",
    )
    archived = models.BooleanField(default=False)
    consulted_by = models.ForeignKey(
        "Message",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="consultations",
        help_text="The reply whose ask_agent call opened this session (a consultation, not listed with "
        "the user's chats); empty for a chat the user started.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at", "-pk"]
        indexes = [models.Index(fields=["owner", "-updated_at"])]

    def __str__(self) -> str:
        return self.title or f"Session {self.pk}"

    @property
    def group_name(self) -> str:
        """The channel-layer group every client watching this session joins."""
        return f"session.{self.pk}"


class Participant(models.Model):
    """An agent taking part in a session. The first is the session's default agent."""

    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="participants")
    agent = models.ForeignKey("agents.Agent", on_delete=models.CASCADE, related_name="participations")
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["position", "pk"]
        constraints = [models.UniqueConstraint(fields=["session", "agent"], name="participant_once_per_session")]

    def __str__(self) -> str:
        return f"{self.agent} in {self.session}"


class Message(models.Model):
    class Role(models.TextChoices):
        SYSTEM = "system"
        USER = "user"
        ASSISTANT = "assistant"

    class Status(models.TextChoices):
        QUEUED = "queued"
        STREAMING = "streaming"
        COMPLETE = "complete"
        CANCELLED = "cancelled"
        FAILED = "failed"
        INTERRUPTED = "interrupted"

    FINAL_STATUSES = (Status.COMPLETE, Status.CANCELLED, Status.FAILED, Status.INTERRUPTED)

    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="messages")
    role = models.CharField(max_length=16, choices=Role.choices)
    agent = models.ForeignKey("agents.Agent", null=True, blank=True, on_delete=models.SET_NULL, related_name="messages")
    reply_to = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="replies")
    content = models.TextField(blank=True, default="")
    # A reasoning model's thinking, apart from its answer (inference.reasoning): shown folded,
    # never sent back to a model in a later prompt.
    reasoning = models.TextField(blank=True, default="")
    # The tool calls an agent made on its way to this reply (sessions_app.tools.ToolRun.as_json),
    # each stored as it starts and again as it ends.
    tool_calls = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.COMPLETE)
    error = models.TextField(blank=True, default="")
    client_id = models.CharField(max_length=100, null=True, blank=True)  # noqa: DJ001 - NULL: not unique
    params = models.JSONField(
        default=dict, blank=True, help_text="Per-reply generation overrides (API calls), already capped."
    )
    # Multi-agent turns. On a user message: the plan of who answers it (sessions_app.turns). On a
    # reply: its place in that chain, from 1.
    turns = models.JSONField(default=dict, blank=True)
    turn = models.PositiveSmallIntegerField(default=0)

    # Stream bookkeeping, written by the worker.
    seq = models.PositiveIntegerField(default=0, help_text="Sequence number of the last delta sent.")
    cancel_requested = models.BooleanField(default=False)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=200, blank=True, default="")

    # Stats of a finished reply.
    backend = models.CharField(max_length=20, blank=True, default="")
    model_name = models.CharField(max_length=200, blank=True, default="")
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    ttft_ms = models.FloatField(null=True, blank=True)
    decode_tps = models.FloatField(null=True, blank=True)
    reasoning_ms = models.PositiveIntegerField(
        null=True, blank=True, help_text="How long the thinking lasted: its first token to its end."
    )
    reasoning_tokens = models.PositiveIntegerField(
        null=True, blank=True, help_text="Tokens of the thinking, counted as the engine's pieces of it."
    )
    finish_reason = models.CharField(
        max_length=16, blank=True, default="", help_text="stop, length or cancelled, as the engine said."
    )

    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["session", "client_id"],
                condition=Q(client_id__isnull=False),
                name="message_client_id_unique_per_session",
            )
        ]
        indexes = [models.Index(fields=["status", "heartbeat_at"])]

    def __str__(self) -> str:
        return f"{self.role} #{self.pk} ({self.status})"

    @property
    def is_final(self) -> bool:
        return self.status in self.FINAL_STATUSES


class Pick(models.Model):
    """A user's choice of the best reply among those compared for one of their messages (the
    compare mode). The leaderboard and the preference export read these."""

    user_message = models.OneToOneField(Message, on_delete=models.CASCADE, related_name="pick")
    winner = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"pick of {self.winner_id} for {self.user_message_id}"


class TurnChoice(models.Model):
    """A supervisor's pick of who speaks next for a user message (``sessions_app.turns``).

    Asked for ``queued``; the worker that asks the supervisor claims it ``choosing`` and renews
    ``heartbeat_at`` while it waits on the model. It ends ``done`` (a speaker queued, or the round
    ended), ``failed`` (the model call raised), ``cancelled`` (a stop) or ``interrupted`` (its
    worker died: the reaper). A failed or interrupted pick leaves a visible note in the session,
    so that no user message waits for ever on a decision that will not come.
    """

    class Status(models.TextChoices):
        QUEUED = "queued"
        CHOOSING = "choosing"
        DONE = "done"
        FAILED = "failed"
        CANCELLED = "cancelled"
        INTERRUPTED = "interrupted"

    user_message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="choices")
    turn = models.PositiveSmallIntegerField(help_text="The turn whose speaker it picks, from 1.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    worker = models.CharField(max_length=200, blank=True, default="")
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    answer = models.CharField(max_length=200, blank=True, default="", help_text="What the supervisor said.")
    error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["pk"]
        indexes = [models.Index(fields=["status", "heartbeat_at"])]

    def __str__(self) -> str:
        return f"pick of turn {self.turn} for {self.user_message_id} ({self.status})"


class LeaderboardTable(models.Model):
    """The leaderboard as last computed from the picks: one row (``sessions_app.leaderboard``).

    Every pick made or changed bumps ``version`` in its own transaction; a computation stores the
    version (and the number of picks) it read before reading the picks. The table is current
    when both still match, so a pick that lands during a computation, or picks deleted with their
    session, leave it visibly stale and the next read computes it again.
    """

    version = models.PositiveBigIntegerField(default=0, help_text="Bumped by every pick made or changed.")
    computed_version = models.PositiveBigIntegerField(default=0)
    picks = models.PositiveIntegerField(default=0, help_text="How many picks the table was computed from.")
    rows = models.JSONField(default=list, blank=True, help_text="Per agent id: rating, interval, wins, losses.")
    computed_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"leaderboard v{self.computed_version} of {self.version}"


class ApiToken(models.Model):
    """A named API token. Only a SHA-256 hash of the secret is stored; the secret is shown once.

    The secrets are 256-bit random strings, so a plain hash (as GitHub and PyPI store tokens)
    resists guessing; a slow password hash would only slow down every request.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, help_text="The secret's first characters, to tell tokens apart.")
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def group_name(self) -> str:
        """Websockets opened with this token listen here, to close the moment it is revoked."""
        return f"token.{self.pk}"

    def is_usable(self, now: Any = None) -> bool:
        from django.utils import timezone

        now = now or timezone.now()
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)
