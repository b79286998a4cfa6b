"""Inference backends: one narrow interface, chosen by dotted path in ``INFERENCE_BACKENDS``."""

from inference.backends.base import (
    Backend,
    BackendError,
    BackendUnavailable,
    CheckResult,
    Chunk,
    GenerationParams,
    ModelSpec,
    Usage,
)
from inference.backends.registry import (
    LoadPlan,
    OptionsError,
    backend_choices,
    backend_class,
    backend_classes,
    load_plan,
    options_validate,
)

__all__ = [
    "Backend",
    "BackendError",
    "BackendUnavailable",
    "CheckResult",
    "Chunk",
    "GenerationParams",
    "LoadPlan",
    "ModelSpec",
    "OptionsError",
    "Usage",
    "backend_choices",
    "backend_class",
    "backend_classes",
    "load_plan",
    "options_validate",
]
