from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from inference import generation, reasoning
from inference.backends.registry import LoadPlan, OptionsError, backend_classes, load_plan, options_validate_to_save
from inference.outbound import OutboundRefused, url_check
from inference.tools.base import BUILTIN_NAMES, DEFAULT_TIMEOUT, ServerSpec


def _validate_stop(value: Any) -> None:
    if not isinstance(value, list) or not all(isinstance(s, str) and s for s in value):
        raise ValidationError("Stop must be a list of non-empty strings.")
    if len(value) > generation.MAX_STOP_STRINGS:
        raise ValidationError(f"At most {generation.MAX_STOP_STRINGS} stop strings.")


def _validate_string_map(value: Any) -> None:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ValidationError('Must be an object of text values, like {"NAME": "value"}.')


class ToolServer(models.Model):
    """An MCP server whose tools agents may use: a command run over stdio, or a streamable HTTP URL.

    Its tools are discovered when it is saved and refreshed (``agents.tool_servers``), never half:
    a server that cannot be reached is not saved. An agent names a tool ``<server>.<tool>``.
    ``env`` and ``headers`` may hold secrets (an API key, a bearer token): the API and the admin
    take them and never show their values again.
    """

    class Transport(models.TextChoices):
        STDIO = "stdio", "stdio: a command the worker runs"
        HTTP = "http", "Streamable HTTP: a URL"

    name = models.SlugField(max_length=40, unique=True, help_text="The prefix of its tools' names: <name>.<tool>.")
    transport = models.CharField(max_length=8, choices=Transport.choices, default=Transport.STDIO)
    command = models.JSONField(
        default=list, blank=True, help_text='stdio: the command and its arguments, e.g. ["npx", "-y", "server"].'
    )
    env = models.JSONField(
        default=dict,
        blank=True,
        validators=[_validate_string_map],
        help_text="stdio: variables added to the server's environment (which holds only PATH, HOME, LANG, "
        "LC_ALL, TZ and PYTHONPATH of the worker's).",
    )
    url = models.CharField(max_length=500, blank=True, help_text="http: the server's MCP endpoint.")
    headers = models.JSONField(
        default=dict, blank=True, validators=[_validate_string_map], help_text="http: headers sent with each request."
    )
    timeout_seconds = models.FloatField(
        default=DEFAULT_TIMEOUT,
        validators=[MinValueValidator(1), MaxValueValidator(600)],
        help_text="The longest a start, a listing or one tool call may take.",
    )
    tools = models.JSONField(default=list, blank=True, help_text="Discovered: name, description, input_schema.")
    discovered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def spec(self) -> ServerSpec:
        """How a worker reaches this server (``inference.tools.mcp``)."""
        return ServerSpec(
            name=self.name,
            transport="http" if self.transport == self.Transport.HTTP else "stdio",
            command=[str(part) for part in self.command or []],
            env=dict(self.env or {}),
            url=self.url,
            headers=dict(self.headers or {}),
            timeout=float(self.timeout_seconds),
        )

    def tool_names(self) -> list[str]:
        """Its tools as agents name them: ``<server>.<tool>``."""
        return [f"{self.name}.{tool['name']}" for tool in self.tools or [] if isinstance(tool, dict)]

    def clean(self) -> None:
        errors: dict[str, list[str]] = {}
        if self.transport == self.Transport.STDIO:
            command = self.command
            if not isinstance(command, list) or not command or not all(isinstance(p, str) and p for p in command):
                errors["command"] = ["A stdio server needs its command: a list of non-empty strings."]
        elif self.transport == self.Transport.HTTP:
            if not self.url:
                errors["url"] = ["An HTTP server needs its URL."]
            else:
                try:
                    url_check(self.url)
                except OutboundRefused as exc:
                    errors["url"] = [f"This platform does not connect to this address: {exc.detail}."]
        if errors:
            raise ValidationError(errors)


def tool_names_known() -> list[str]:
    """Every name an agent may list in ``tools``: the built-ins, then each discovered server tool."""
    names = list(BUILTIN_NAMES)
    for server in ToolServer.objects.order_by("name"):
        names.extend(server.tool_names())
    return names


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

    class ToolChoice(models.TextChoices):
        AUTO = "auto", "Auto: the model decides"
        REQUIRED = "required", "Required: the first step calls a tool"
        NONE = "none", "None: never calls a tool"

    tools = models.JSONField(
        default=list,
        blank=True,
        help_text='Built-in tools by name ("calculator") and tool servers\' tools as "<server>.<tool>".',
    )
    tool_choice = models.CharField(max_length=8, choices=ToolChoice.choices, default=ToolChoice.AUTO)
    max_tool_steps = models.PositiveSmallIntegerField(
        default=5,
        validators=[MinValueValidator(1), MaxValueValidator(20)],
        help_text="The most rounds of tool calls in one reply before the model must answer.",
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
        tool_errors = self._tool_errors()
        if tool_errors:
            errors["tools"] = tool_errors
        if errors:
            raise ValidationError(errors)

    def _tool_errors(self) -> list[str]:
        tools = self.tools
        if not isinstance(tools, list) or not all(isinstance(name, str) for name in tools):
            return ["Tools must be a list of tool names."]
        if len(set(tools)) != len(tools):
            return ["Each tool may be listed once."]
        if self.tool_choice == self.ToolChoice.REQUIRED and not tools:
            return ['"required" tool choice needs at least one tool.']
        unknown = [name for name in tools if name not in BUILTIN_NAMES]
        if not unknown:
            return []
        known = set(tool_names_known())
        return [
            f"Unknown tool {name!r}: a built-in ({', '.join(BUILTIN_NAMES)}) or <server>.<tool> of a tool "
            "server's discovered tools."
            for name in unknown
            if name not in known
        ]
