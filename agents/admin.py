from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import flatten_fieldsets
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html_join

from agents.forms import is_option_field, option_field_name, option_fields, tool_choices
from agents.models import Agent, ToolServer
from agents.tool_servers import tool_server_discover, tool_server_refresh, tool_server_save
from inference.backends.base import Backend
from inference.backends.registry import OptionsError, backend_choices, backend_classes, options_validate_to_save

if TYPE_CHECKING:
    from django.contrib.admin.options import _FieldOpts, _FieldsetSpec


class AgentAdminForm(forms.ModelForm):
    """The agent form, with one field per option of every configured backend.

    Only the chosen backend's option fields are read on save; they become ``backend_options``,
    keeping only values that differ from the schema's defaults (an agent follows a changed default).
    """

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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Edited through the option fields below; the API still takes the JSON.
        self.fields.pop("backend_options", None)
        # Read per form, not at import: a backend added to INFERENCE_BACKENDS needs no code here.
        self.backends: dict[str, type[Backend]] = backend_classes()
        current = self.instance.backend
        choices = backend_choices()
        if self.instance.pk and current not in self.backends:
            choices.append((current, f"{current} (not configured)"))
        self.fields["backend"] = forms.ChoiceField(
            choices=choices,
            initial=self.fields["backend"].initial,  # the model's default, for a new agent
            help_text="Its options are below; only the chosen backend's options are saved.",
        )
        stored_tools = self.instance.tools if isinstance(self.instance.tools, list) else []
        if "tools" in self.fields:
            self.fields["tools"] = forms.MultipleChoiceField(
                choices=tool_choices([str(name) for name in stored_tools]),
                required=False,
                widget=forms.CheckboxSelectMultiple,
                initial=stored_tools,
                help_text="Built-in tools, and the tools discovered on the tool servers (refresh a server "
                "to see new ones).",
            )
        stored = self.instance.backend_options if isinstance(self.instance.backend_options, dict) else {}
        for name, cls in self.backends.items():
            own = stored if name == current else {}
            for option, field in option_fields(cls.options_schema, stored=own).items():
                self.fields[option_field_name(name, option)] = field

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
        cls = self.backends.get(data.get("backend") or "")
        if cls is not None:
            # The other backends' fields are hidden and not saved: what is in them blocks nothing.
            own = option_field_name(cls.name, "")
            for name in [name for name in self.errors if is_option_field(name) and not name.startswith(own)]:
                del self.errors[name]
            self._clean_options(cls)
        return data

    def _clean_options(self, cls: type[Backend]) -> None:
        """Set ``backend_options`` from the chosen backend's fields, or put each problem on its field."""
        names = {option: option_field_name(cls.name, option) for option in cls.options_schema.model_fields}
        if any(name in self.errors for name in names.values()):
            return  # the person fixes those first
        values = {option: self.cleaned_data.get(name) for option, name in names.items()}
        # An empty field leaves the option out, so the schema's default applies.
        chosen = {option: value for option, value in values.items() if value is not None and value != ""}
        try:
            typed = options_validate_to_save(cls.name, chosen)
        except OptionsError as exc:
            for line in exc.messages:
                where, _, message = line.partition(": ")
                name = names.get(where.split(".")[0])
                if name is not None:
                    self.add_error(name, message)
                else:  # a check across fields (at "options"), or a key with no field
                    self.add_error(None, f"{cls.label} options: {message if where == 'options' else line}")
            return
        self.instance.backend_options = typed.model_dump(mode="json", exclude_defaults=True)

    def add_error(self, field: str | None, error: Any) -> None:
        # Agent.clean() checks backend_options again, and the form has no such field to hold its
        # errors (Django would raise): clean() has already put each of them on its option field.
        if isinstance(error, ValidationError) and hasattr(error, "error_dict"):
            error.error_dict.pop("backend_options", None)
            if not error.error_dict:
                return
        super().add_error(field, error)


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
        ("Model and backend", {"fields": ["backend", "model", "api_key", "clear_api_key"]}),
        # The options of each backend go here: see get_fieldsets().
        (
            "Generation defaults",
            {
                "fields": [
                    ("temperature", "top_p"),
                    ("max_tokens", "context_window"),
                    "max_prompt_chars",
                    "repetition_penalty",
                    "stop",
                    "reasoning",
                ]
            },
        ),
        ("Tools", {"fields": ["tools", "tool_choice", "max_tool_steps"]}),
        (
            "Where it runs and who may use it",
            {"fields": ["node", "is_active", "visibility", "allowed_users", "allowed_groups"]},
        ),
    ]

    class Media:
        js = ["agents/backend_options.js"]  # shows the chosen backend's fieldset only

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> _FieldsetSpec:
        fieldsets = list(super().get_fieldsets(request, obj))
        after = 1 + next(i for i, (_, spec) in enumerate(fieldsets) if "backend" in spec["fields"])
        return [*fieldsets[:after], *self.option_fieldsets(), *fieldsets[after:]]

    def option_fieldsets(self) -> list[tuple[str | None, _FieldOpts]]:
        """One fieldset per configured backend with options, titled and classed for the script."""
        return [
            (
                f"{cls.label} options",
                {
                    "fields": [option_field_name(name, option) for option in cls.options_schema.model_fields],
                    "classes": ["backend-options", f"backend-{name}"],
                },
            )
            for name, cls in backend_classes().items()
            if cls.options_schema.model_fields
        ]

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        # The form makes the option fields itself; the model knows none of them, and
        # modelform_factory refuses field names it cannot find.
        fields = kwargs.get("fields")
        if fields is None:
            fields = flatten_fieldsets(self.get_fieldsets(request, obj))
        kwargs["fields"] = [name for name in fields if not is_option_field(name)]
        return super().get_form(request, obj, change, **kwargs)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return []


class SecretMapField(forms.JSONField):
    """A JSON object of text values that is never rendered back: empty keeps what is stored."""

    widget = forms.Textarea(attrs={"rows": 3, "placeholder": '{"NAME": "value"}'})

    def prepare_value(self, value: Any) -> str:
        return ""


class ToolServerAdminForm(forms.ModelForm):
    """A tool server; saving asks it for its tools first (see ``_post_clean``), so a server that
    cannot start or answer shows the reason on the form and is not saved."""

    env = SecretMapField(
        required=False,
        help_text="stdio: variables added to the server's environment. Values are never shown again: "
        "leave empty to keep them, enter {} to remove them all.",
    )
    headers = SecretMapField(
        required=False,
        help_text="http: headers sent with each request (a bearer token, say). Never shown again: "
        "leave empty to keep them, enter {} to remove them all.",
    )

    class Meta:
        model = ToolServer
        fields = ["name", "transport", "command", "env", "url", "headers", "timeout_seconds"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.discovered: list[dict[str, Any]] | None = None
        for name in ("env", "headers"):
            keys = sorted(getattr(self.instance, name) or {})
            if keys:
                self.fields[name].help_text += f" Set now: {', '.join(keys)}."

    def _keep_if_empty(self, name: str) -> Any:
        value = self.cleaned_data.get(name)
        if value in (None, ""):
            return getattr(self.instance, name) or {}
        return value

    def clean_env(self) -> Any:
        return self._keep_if_empty("env")

    def clean_headers(self) -> Any:
        return self._keep_if_empty("headers")

    def _post_clean(self) -> None:
        # In Django (after clean(): the instance now holds the form's values, checked by the
        # model), though not in its type stubs.
        super()._post_clean()  # type: ignore[misc]
        if self.errors:
            return
        try:
            self.discovered = tool_server_discover(server=self.instance)
        except ValidationError as exc:
            self.add_error(None, exc)


@admin.register(ToolServer)
class ToolServerAdmin(admin.ModelAdmin):
    form = ToolServerAdminForm
    list_display = ["name", "transport", "tool_count", "discovered_at", "timeout_seconds"]
    list_filter = ["transport"]
    search_fields = ["name", "url"]
    readonly_fields = ["tool_list", "discovered_at", "created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["name", "transport", "timeout_seconds"]}),
        ("stdio", {"fields": ["command", "env"]}),
        ("Streamable HTTP", {"fields": ["url", "headers"]}),
        ("Discovered tools", {"fields": ["tool_list", "discovered_at", "created_at", "updated_at"]}),
    ]
    actions = ["refresh_tools"]

    @admin.display(description="Tools")
    def tool_count(self, obj: ToolServer) -> int:
        return len(obj.tools or [])

    @admin.display(description="Tools")
    def tool_list(self, obj: ToolServer) -> str:
        tools = [tool for tool in obj.tools or [] if isinstance(tool, dict)]
        if not tools:
            return "None yet."
        return format_html_join(
            "",
            "<p><strong>{}</strong>: {}<br><code>{}</code></p>",
            (
                (
                    f"{obj.name}.{tool.get('name')}",
                    tool.get("description") or "",
                    json.dumps(tool.get("input_schema"), ensure_ascii=False),
                )
                for tool in tools
            ),
        )

    def save_model(self, request: HttpRequest, obj: ToolServer, form: Any, change: bool) -> None:
        tool_server_save(server=obj, tools=getattr(form, "discovered", None))

    @admin.action(description="Refresh tools (ask each server again)")
    def refresh_tools(self, request: HttpRequest, queryset: QuerySet[ToolServer]) -> None:
        for server in queryset:
            try:
                server = tool_server_refresh(server=server)
            except ValidationError as exc:
                self.message_user(request, " ".join(exc.messages), messages.ERROR)  # it names the server
            else:
                self.message_user(
                    request, f"Tool server {server.name}: {len(server.tools)} tools discovered.", messages.SUCCESS
                )
