"""OpenVINO's compiled-model cache stays inside the data folder's openvino-cache/, whatever cache_dir says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from rest_framework.test import APIClient

from agents.models import Agent
from inference.backends.base import BackendError
from inference.backends.openvino import OpenVINOBackend, OpenVINOOptions
from inference.models import ModelArtifact


@pytest.fixture
def data_dir(settings: Any, tmp_path: Path) -> Path:
    settings.DATA_DIR = tmp_path / "data"
    return tmp_path / "data"


@pytest.fixture
def ir_artifact(db: Any, tmp_path: Path) -> ModelArtifact:
    folder = tmp_path / "ir"
    folder.mkdir()
    return ModelArtifact.objects.create(name="tiny IR", format="openvino", path=str(folder))


def _agent(artifact: ModelArtifact, **options: Any) -> dict[str, Any]:
    return {"name": "Edge", "slug": "edge", "backend": "openvino", "model": artifact.pk, "backend_options": options}


@pytest.mark.parametrize("cache_dir", ["/etc/cron.d", "../../home", "gpu/../../..", "C:\\Windows"])
def test_a_cache_dir_outside_the_cache_folder_is_refused_when_saved(
    staff_api: APIClient, ir_artifact: ModelArtifact, cache_dir: str
) -> None:
    response = staff_api.post("/api/agents/", _agent(ir_artifact, cache_dir=cache_dir), format="json")
    assert response.status_code == 400, response.content
    lines = response.json()["errors"]["backend_options"]
    assert any(line.startswith("cache_dir: ") and "openvino-cache" in line for line in lines), lines
    assert not Agent.objects.filter(slug="edge").exists()


def test_a_name_is_taken_and_resolves_under_the_data_folder(
    staff_api: APIClient, ir_artifact: ModelArtifact, data_dir: Path
) -> None:
    response = staff_api.post("/api/agents/", _agent(ir_artifact, cache_dir="gpu"), format="json")
    assert response.status_code == 201, response.content
    from inference.backends.openvino import cache_folder

    folder = cache_folder("gpu")
    assert folder == (data_dir / "openvino-cache" / "gpu").resolve() and folder.is_dir()


def test_the_worker_refuses_a_cache_dir_saved_before_the_check(ir_artifact: ModelArtifact, data_dir: Path) -> None:
    agent = Agent.objects.create(
        name="Edge", slug="edge", backend="openvino", model=ir_artifact, backend_options={"cache_dir": "/tmp/anywhere"}
    )
    with pytest.raises(BackendError, match="cache_dir"):
        agent.load_plan()


@pytest.mark.parametrize("cache_dir", ["/tmp/elsewhere-cache", "../outside", "link/inside"])
def test_the_backend_refuses_to_load_with_a_cache_outside_its_folder(
    tmp_path: Path, data_dir: Path, cache_dir: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = data_dir / "openvino-cache"
    root.mkdir(parents=True)
    (root / "link").symlink_to(outside)  # a link inside the cache folder that leads out of it
    backend = OpenVINOBackend(
        model_path=str(tmp_path / "ir"), options=OpenVINOOptions.model_construct(cache_dir=cache_dir)
    )
    with pytest.raises(BackendError) as caught:
        backend.load()
    assert "cache_dir" in str(caught.value) and str(root.resolve()) in caught.value.detail
    assert not (outside / "inside").exists() and not Path("/tmp/elsewhere-cache").exists()
