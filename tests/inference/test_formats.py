"""Artifact formats come from a registry, not from a closed choice of the column."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ValidationError

from inference.formats import FORMATS, format_register
from inference.models import Job, ModelArtifact


@pytest.fixture
def mlx() -> Any:
    format_register("mlx", "MLX")
    yield "mlx"
    FORMATS.pop("mlx", None)


def test_an_unknown_format_is_refused_naming_the_known_ones(db: Any) -> None:
    artifact = ModelArtifact(name="x", format="mlx", path="/tmp/x")
    with pytest.raises(ValidationError) as caught:
        artifact.full_clean()
    assert "'mlx' is not an artifact format" in str(caught.value) and "gguf" in str(caught.value)


def test_a_registered_format_is_valid_and_listed_in_the_admin_form(admin_client: Any, mlx: str) -> None:
    artifact = ModelArtifact(name="x", format=mlx, path="/tmp/x")
    artifact.full_clean()
    assert artifact.get_format_display() == "MLX"
    page = admin_client.get("/admin/inference/modelartifact/add/").content.decode()
    assert '<option value="mlx">MLX</option>' in page and '<option value="gguf">GGUF</option>' in page


def test_a_job_kind_is_not_a_closed_choice_of_the_column(db: Any) -> None:
    # A kind added to the pipeline's registry needs no migration: the column takes any name.
    job = Job.objects.create(kind="a_kind_from_a_plugin")
    assert str(job) == f"a_kind_from_a_plugin #{job.pk} (queued)"
