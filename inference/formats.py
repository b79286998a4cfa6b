"""Artifact formats: the registry a ``ModelArtifact.format`` is checked against.

The column is not a closed choice: a format added here (by a backend that serves it, or by a job
kind that makes it) needs no migration. ``ModelArtifact.Format`` names the built-in ones."""

from __future__ import annotations

from django.core.exceptions import ValidationError

# name -> label, in the order the admin lists them.
FORMATS: dict[str, str] = {}


def format_register(name: str, label: str) -> str:
    """Make ``name`` a known artifact format (idempotent); returns the name."""
    FORMATS.setdefault(name, label)
    return name


def format_label(name: str) -> str:
    return FORMATS.get(name, name)


def format_choices() -> list[tuple[str, str]]:
    return list(FORMATS.items())


def format_validate(value: str) -> None:
    if value not in FORMATS:
        known = ", ".join(FORMATS)
        raise ValidationError(f"{value!r} is not an artifact format (known: {known})", code="unknown_format")
