"""The backends this deployment knows: the classes named by dotted path in ``INFERENCE_BACKENDS``.

Each class declares its name, label, options schema, the artifact formats it runs and how its
load arguments are built, so nothing above this layer names a backend. Importing a backend
module is cheap (engines are imported in ``load()``), so the web process reads these too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.utils.module_loading import import_string
from pydantic import BaseModel, ValidationError

from inference import outbound
from inference.backends.base import Backend, BackendError, ModelSpec
from inference.errors import PlatformError


class OptionsError(PlatformError, ValueError):
    """Options that do not fit the backend's schema; ``messages`` is one line per problem."""

    def __init__(self, messages: list[str], *, field: str | None = "backend_options") -> None:
        super().__init__("; ".join(messages), code="invalid_options", field=field)
        self.messages = messages


def backend_classes() -> dict[str, type[Backend]]:
    """Every configured backend by name, in the order of the setting."""
    classes: dict[str, type[Backend]] = {}
    for path in settings.INFERENCE_BACKENDS:
        cls: type[Backend] = import_string(path)
        classes[cls.name] = cls
    return classes


def backend_class(name: str) -> type[Backend]:
    classes = backend_classes()
    cls = classes.get(name)
    if cls is None:
        raise BackendError(f"No backend named {name!r}; this deployment knows: {', '.join(classes)}.")
    return cls


def backend_choices() -> list[tuple[str, str]]:
    """(name, label) pairs for forms and schemas."""
    return [(name, cls.label) for name, cls in backend_classes().items()]


def options_validate(backend: str, options: object) -> BaseModel:
    """The backend's typed options for ``options``; raises OptionsError naming each bad field."""
    cls = backend_classes().get(backend)
    if cls is None:
        raise OptionsError([f"unknown backend {backend!r}"])
    if not isinstance(options, dict):
        raise OptionsError(["options must be a JSON object"])
    try:
        return cls.options_schema.model_validate(options)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "options"
            lines.append(f"{where}: {err['msg']}")
        raise OptionsError(lines) from None


def options_validate_to_save(backend: str, options: object) -> BaseModel:
    """``options_validate``, then what saving an agent checks besides: every URL the options point
    a worker at, against OUTBOUND_ALLOWED_HOSTS. Resolves host names, so it is not for every reply
    (the worker checks the addresses again when it connects)."""
    typed = options_validate(backend, options)
    lines = []
    for option, url in backend_classes()[backend].outbound_urls(typed).items():
        try:
            outbound.url_check(url)
        except outbound.OutboundRefused as exc:
            lines.append(f"{option}: {exc.detail}")  # staff save agents: they may read the reason
    if lines:
        raise OptionsError(lines)
    return typed


@dataclass(frozen=True)
class LoadPlan:
    """How to build one loaded model, and the key it is cached under in a worker process."""

    cls: type[Backend]
    kwargs: dict[str, Any]

    @property
    def key(self) -> tuple[Any, ...]:
        return self.cls.cache_key(**self.kwargs)

    def build(self) -> Backend:
        return self.cls(**self.kwargs)


def load_plan(
    *, backend: str, location: str, options: object, api_key: str = "", context_window: int = 2048
) -> LoadPlan:
    """The plan for running ``location`` on ``backend`` with raw (unvalidated) ``options``."""
    cls = backend_class(backend)
    try:
        typed = options_validate(backend, options)
    except OptionsError as exc:
        raise BackendError(f"The agent's backend options are invalid: {exc}") from None
    spec = ModelSpec(location=location, options=typed, api_key=api_key, context_window=context_window)
    return LoadPlan(cls=cls, kwargs=cls.load_kwargs(spec))


def backend_for_format(fmt: str) -> str | None:
    """The backend that runs an artifact of this format by default: the most specific one that
    takes it (GGUF: llama_cpp, OpenVINO IR: openvino, Hugging Face: vllm); None when none does."""
    candidates = [cls for cls in backend_classes().values() if fmt in cls.formats]
    if not candidates:
        return None
    return min(candidates, key=lambda cls: len(cls.formats)).name
