"""Fixtures shared by the job tests: jobs recorded instead of run, a tiny Hugging Face artifact.

A job test module applies the first to all its tests with
``pytestmark = pytest.mark.usefixtures("no_dispatch")``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from inference.models import ModelArtifact
from pipeline.jobs import dispatch
from tests.inference.outbound_helpers import dns, upstream  # noqa: F401 - fixtures of the outbound tests


@pytest.fixture
def no_dispatch(monkeypatch: pytest.MonkeyPatch, settings: Any, tmp_path: Path) -> list[int]:
    """Jobs are recorded instead of run, and write under a temporary artifact root."""
    queued: list[int] = []
    monkeypatch.setattr(dispatch, "job_enqueue", lambda job: queued.append(job.pk))
    monkeypatch.setattr(dispatch, "embedded_recover", lambda: None)
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    settings.JOB_CANCEL_POLL_SECONDS = 0.05
    settings.JOB_HEARTBEAT_SECONDS = 0.2
    return queued


@pytest.fixture
def hf_artifact(db: Any, tmp_path: Path) -> ModelArtifact:
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    return ModelArtifact.objects.create(name="tiny HF", format="hf", path=str(folder), context_length=2048)
