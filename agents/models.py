from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q

from inference import generation, reasoning
from inference.backends.registry import LoadPlan, OptionsError, backend_classes, load_plan, options_validate_to_save


def _validate_stop(value: Any) -> None:
    if not isinstance(value, list) or not all(isinstance(s, str) and s for s in value):
        raise ValidationError("Stop must be a list of non-empty strings.")
    if len(value) > generation.MAX_STOP_STRINGS:
        raise ValidationError(f"At most {generation.MAX_STOP_STRINGS} stop strings.")


class AgentQuerySet(models.QuerySet["Agent"]):
    def visible_to(self, user: Any) -> AgentQuerySet:
        """Active agents this user may chat with; staff see every agent."""
        if not user.is_authenticated:
            return self.none()
        if user.is_staff:
            return self.all()
        return (
            self.filter(is_active=True)
            .filter(
                Q(visibility=Agent.Visibility.EVERYONE)
                | Q(allowed_users=user)
                | Q(allowed_groups__in=user.groups.all())
            )
            .distinct()
        )


class Agent(models.Model):
    """A persona: system prompt, model, backend, generation settings, and where it runs."""

    class Visibility(models.TextChoices):
        EVERYONE = "everyone", "Every user"
        RESTRICTED = "restricted", "Chosen users and groups"

    class Reasoning(models.TextChoices):
        """How the model shows its thinking (inference.reasoning)."""

        AUTO = reasoning.MODE_AUTO, "Detect from the chat template"
        THINK_TAGS = reasoning.MODE_THINK_TAGS, "Thinks between <think> and </think>"
        OFF = reasoning.MODE_OFF, "Off: everything it writes is the answer"

    name = models.CharField(max_length=100)
    slug = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    avatar_emoji = models.CharField(max_length=8, blank=True, default="🤖")
    avatar_image = models.ImageField(upload_to="avatars/", blank=True)
    system_prompt = models.TextField(blank=True)

    # No choices here: the backends are whatever INFERENCE_BACKENDS names (checked in clean()),
    # so adding one needs no migration.
    backend = models.CharField(max_length=40, default="llama_cpp", help_text="One of INFERENCE_BACKENDS.")
    model = models.ForeignKey(
        "inference.ModelArtifact", null=True, blank=True, on_delete=models.PROTECT, related_name="agents"
    )
    backend_options = models.JSONField(
        default=dict, blank=True, help_text="Backend-specific options, validated per backend."
    )
    api_key = models.CharField(
        max_length=500, blank=True, help_text="For OpenAI-compatible servers. Never shown again."
    )

    temperature = models.FloatField(default=0.7, validators=generation.TEMPERATURE.validators())
    top_p = models.FloatField(default=0.95, validators=generation.TOP_P.validators())
    max_tokens = models.PositiveIntegerField(
        help_text="Default reply length, and the most an API caller may ask for.",
        default=512,
        validators=generation.MAX_TOKENS.validators(),
    )
    repetition_penalty = models.FloatField(default=1.1, validators=generation.REPETITION_PENALTY.validators())
    stop = models.JSONField(default=list, blank=True, validators=[_validate_stop])
    max_prompt_chars = models.PositiveIntegerField(
        default=32000,
        validators=[MinValueValidator(1)],
        help_text="Longest prompt (all messages of an API call, or one chat message) this agent accepts.",
    )
    context_window = models.PositiveIntegerField(default=2048, validators=generation.CONTEXT_WINDOW.validators())
    reasoning = models.CharField(
        max_length=16,
        choices=Reasoning.choices,
        default=Reasoning.AUTO,
        help_text="A reasoning model's thinking is stored and shown apart from its answer, and left out of "
        "later prompts. Auto: when the model's chat template mentions <think>. Choose <think> tags for a "
        "model on an OpenAI-compatible server (its template cannot be read from here).",
    )

    node = models.SlugField(
        max_length=64,
        blank=True,
        help_text="Node label: replies go to the queue named backend.node (e.g. openvino.edge-01).",
    )
    is_active = models.BooleanField(default=True)
    visibility = models.CharField(max_length=16, choices=Visibility.choices, default=Visibility.EVERYONE)
    allowed_users = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="+")
    allowed_groups = models.ManyToManyField("auth.Group", blank=True, related_name="+")

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = AgentQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def queue(self) -> str:
        """The Celery queue whose workers host this agent's backend."""
        return f"{self.backend}.{self.node}" if self.node else self.backend

    @property
    def backend_label(self) -> str:
        cls = backend_classes().get(self.backend)
        return cls.label if cls is not None else self.backend

    def load_plan(self) -> LoadPlan:
        """How a worker loads this agent's model (raises BackendError when it cannot)."""
        location = (self.model.path or self.model.url) if self.model is not None else ""
        return load_plan(
            backend=self.backend,
            location=location,
            options=self.backend_options,
            api_key=self.api_key,
            context_window=self.context_window,
        )

    def clean(self) -> None:
        classes = backend_classes()
        cls = classes.get(self.backend)
        if cls is None:
            raise ValidationError({"backend": [f"Unknown backend {self.backend!r}; known: {', '.join(classes)}."]})
        errors: dict[str, list[str]] = {}
        try:
            # Also checks base_url against OUTBOUND_ALLOWED_HOSTS: the API and the admin both save here.
            options = options_validate_to_save(self.backend, self.backend_options)
        except OptionsError as exc:
            errors["backend_options"] = exc.messages
            options = None
        if self.model is not None:
            if self.model.format not in cls.formats:
                errors["model"] = [
                    f"{cls.label} cannot run a model in {self.model.format!r} format; "
                    f"it runs: {', '.join(sorted(cls.formats))}."
                ]
        elif options is not None and cls.needs_artifact(options):
            errors["model"] = [f"{cls.label} needs a model."]
        if errors:
            raise ValidationError(errors)
