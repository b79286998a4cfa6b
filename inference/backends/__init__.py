"""Inference backends: one narrow interface, chosen by dotted path in ``INFERENCE_BACKENDS``."""

from inference.backends.base import (
    Backend,
    BackendError,
    BackendUnavailable,
    CheckResult,
    Chunk,
    GenerationParams,
    Usage,
    backend_class,
)

__all__ = [
    "Backend",
    "BackendError",
    "BackendUnavailable",
    "CheckResult",
    "Chunk",
    "GenerationParams",
    "Usage",
    "backend_class",
]
