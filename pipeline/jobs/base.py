"""What every job kind is made of: typed params, the artifacts it makes, its entry in KINDS."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from inference.models import ModelArtifact
from pipeline.jobs.context import JobContext

Format = ModelArtifact.Format


class ChainStep(BaseModel):
    """A job to start on this job's result when it succeeds (its ``source`` is filled in)."""

    model_config = ConfigDict(extra="forbid")

    kind: str = Field(description="The next job's kind, e.g. convert.")
    params: dict[str, Any] = Field(default_factory=dict, description="Its params, without source.")


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: int = Field(description="The id of the input artifact.")
    then: list[ChainStep] = Field(
        default_factory=list, max_length=8,
        description="Jobs to run in turn on the result, e.g. [{kind: convert, params: {to: gguf}}].",
    )  # fmt: skip


@dataclass
class Output:
    """An artifact a job made: its folder or file inside the job's work folder, and its facts."""

    relpath: str
    format: str
    quantization: str
    label: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Kind:
    name: str
    params: type[Params]
    sources: tuple[str, ...]
    run: Callable[[JobContext, Any], list[Output]]
    description: str
    queue: str = "jobs"
    source_check: Callable[[Any, ModelArtifact], str | None] | None = None
    # The format of the artifact it makes from these params (None: none), for checking ``then``.
    makes: Callable[[Any], str | None] = lambda params: None
    # Lookups against the database and the requesting user, before anything is queued (raise
    # JobError); ``commit`` is True inside job_create's transaction, to store what the job needs.
    prepare: Callable[[Any, Any, bool], Any] | None = None
    # The queue a job with these params goes to (a GPU queue, say); default: ``queue``.
    queue_for: Callable[[Any], str] | None = None
    # Seconds a step has after SIGTERM to stop cleanly (a fine-tune saves a checkpoint).
    kill_grace: float | None = None
