"""Django form fields for the agent admin: one per backend option, and the choice of tools.

Every backend declares its options once, as a pydantic model with a default, bounds and a
description on each field; this module turns each field into the matching form field, so a new
backend, or a new option, shows up in the admin without form code. The schema stays the judge:
the admin validates what a person entered with ``options_validate``, as the API does.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import NoneType, UnionType
from typing import Any, Literal, Union, get_args, get_origin

from django import forms
from pydantic import AnyUrl, BaseModel
from pydantic.fields import FieldInfo

from agents.models import ToolServer
from inference.tools.base import BUILTIN_NAMES

OPTION_PREFIX = "opt__"
_BOUND_NAMES = ("ge", "gt", "le", "lt", "min_length", "max_length")


def option_field_name(backend: str, option: str) -> str:
    """The form field of ``option`` of ``backend``: every backend's options live in one form."""
    return f"{OPTION_PREFIX}{backend}__{option}"


def is_option_field(name: str) -> bool:
    return name.startswith(OPTION_PREFIX)


def option_fields(schema: type[BaseModel], *, stored: Mapping[str, object]) -> dict[str, forms.Field]:
    """One form field per option of ``schema``, by option name; ``stored`` values are the initials."""
    fields: dict[str, forms.Field] = {}
    for name, info in schema.model_fields.items():
        initial = stored[name] if name in stored else _default(info)
        fields[name] = option_form_field(name, info, initial=initial)
    return fields


def option_form_field(name: str, info: FieldInfo, *, initial: object) -> forms.Field:
    """The form field for one option. Never required: only the chosen backend's fields count,
    and an empty field means "the schema's default" (a required option is reported by the schema).
    """
    kind, optional = _unwrap_optional(info.annotation)
    bounds = _bounds(info)
    common: dict[str, Any] = {
        "label": info.title or name,
        "help_text": option_help_text(info),
        "required": False,
        "initial": initial,
    }
    if kind is bool:
        # A checkbox that starts at the default keeps it; None needs a third state.
        return forms.NullBooleanField(**common) if optional else forms.BooleanField(**common)
    if kind is int:
        return forms.IntegerField(min_value=bounds.get("ge"), max_value=bounds.get("le"), **common)
    if kind is float:
        return forms.FloatField(min_value=bounds.get("ge"), max_value=bounds.get("le"), **common)
    if get_origin(kind) is Literal:
        by_text = {str(value): value for value in get_args(kind)}
        choices = [(text, text) for text in by_text]
        if optional:
            choices.insert(0, ("", "---------"))
        return forms.TypedChoiceField(choices=choices, coerce=by_text.__getitem__, empty_value=None, **common)
    if _is_class(kind) and issubclass(kind, AnyUrl):
        # Not forms.URLField: Django's validator refuses hosts without a dot (http://vllm:8000/v1,
        # a compose service), which pydantic accepts; the schema checks the URL.
        return forms.CharField(widget=forms.URLInput, **common)
    if kind is str:
        return forms.CharField(max_length=bounds.get("max_length"), min_length=bounds.get("min_length"), **common)
    # dict, list and anything else: JSON, whose shape the schema checks.
    return forms.JSONField(widget=forms.Textarea(attrs={"rows": 3}), **common)


def option_help_text(info: FieldInfo) -> str:
    """The description, then the default and the bounds: "Batch size. Default 512; 1 to 65536." """
    description = (info.description or "").strip()
    if description and not description.endswith("."):
        description += "."
    facts = "; ".join(fact for fact in (_default_text(info), _bounds_text(_bounds(info))) if fact)
    return f"{description} {facts}.".strip()


def _default(info: FieldInfo) -> object:
    return None if info.is_required() else info.get_default(call_default_factory=True)


def _default_text(info: FieldInfo) -> str:
    if info.is_required():
        return "Required"
    default = _default(info)
    if default is None or default == "" or default == {} or default == []:
        return "Optional"
    return f"Default {_shown(default)}"


def _bounds_text(bounds: Mapping[str, Any]) -> str:
    words = []
    if "ge" in bounds and "le" in bounds:
        words.append(f"{_shown(bounds['ge'])} to {_shown(bounds['le'])}")
    else:
        if "ge" in bounds:
            words.append(f"at least {_shown(bounds['ge'])}")
        if "le" in bounds:
            words.append(f"at most {_shown(bounds['le'])}")
    if "gt" in bounds:
        words.insert(0, f"more than {_shown(bounds['gt'])}")
    if "lt" in bounds:
        words.append(f"less than {_shown(bounds['lt'])}")
    if "min_length" in bounds:
        words.append(f"at least {bounds['min_length']} characters")
    if "max_length" in bounds:
        words.append(f"at most {bounds['max_length']} characters")
    return ", ".join(words)


def _shown(value: object) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _bounds(info: FieldInfo) -> dict[str, Any]:
    """ge, gt, le, lt, min_length and max_length, from the annotated-types constraints."""
    found: dict[str, Any] = {}
    for constraint in info.metadata:
        for name in _BOUND_NAMES:
            value = getattr(constraint, name, None)
            if value is not None:
                found[name] = value
    return found


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    """(``X``, True) for ``X | None``; the annotation and False otherwise."""
    if get_origin(annotation) not in (Union, UnionType):
        return annotation, False
    args = get_args(annotation)
    rest = [arg for arg in args if arg is not NoneType]
    optional = len(rest) < len(args)
    return (rest[0] if len(rest) == 1 else annotation), optional


def _is_class(kind: Any) -> bool:
    # dict[str, object] is a GenericAlias, not a class, though it looks like one to some checks.
    return isinstance(kind, type) and get_origin(kind) is None


def tool_choices(stored: list[str] | None = None) -> list[tuple[str, str]]:
    """The tools an agent may be given, for the admin's multi-select: the built-ins, then every
    discovered ``<server>.<tool>``. A stored name no server offers any more stays listed, marked,
    so the form shows it (and ``Agent.clean`` asks for it to be removed)."""
    choices = [(name, f"{name} (built-in)") for name in BUILTIN_NAMES]
    for server in ToolServer.objects.order_by("name"):
        for tool in server.tools or []:
            if isinstance(tool, dict) and tool.get("name"):
                description = str(tool.get("description") or "").strip().splitlines()
                label = f"{server.name}.{tool['name']}" + (f": {description[0][:80]}" if description else "")
                choices.append((f"{server.name}.{tool['name']}", label))
    offered = {value for value, _ in choices}
    choices.extend((name, f"{name} (no longer offered)") for name in stored or [] if name not in offered)
    return choices
