"""A worker loads the models of the agents on its queues when it starts."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from agents.models import Agent
from agents.preload import models_preload
from inference.cache import model_cache
from inference.models import ModelArtifact
from tests.fakes import FakeBackend, use_backend


@pytest.fixture(autouse=True)
def fake_engines(settings: Any) -> Iterator[None]:
    use_backend(settings, "tests.fakes.FakeBackend")
    use_backend(settings, "tests.fakes.BrokenOpenVINOBackend")
    FakeBackend.loads = 0
    model_cache().clear()
    yield
    model_cache().clear()


def test_the_models_of_the_agents_on_the_workers_queues_are_loaded_once(gguf_artifact: ModelArtifact) -> None:
    Agent.objects.create(name="A", slug="a", backend="llama_cpp", model=gguf_artifact)
    Agent.objects.create(name="B", slug="b", backend="llama_cpp", model=gguf_artifact)  # same model
    Agent.objects.create(name="Edge", slug="edge", backend="llama_cpp", model=gguf_artifact, node="edge-01")
    Agent.objects.create(name="Off", slug="off", backend="llama_cpp", model=gguf_artifact, is_active=False)
    assert models_preload(queues=["llama_cpp", "default"]) == ["a", "b"]
    assert FakeBackend.loads == 1
    assert len(model_cache().loaded()) == 1


def test_a_model_that_fails_to_load_is_skipped(gguf_artifact: ModelArtifact, tmp_path: Any) -> None:
    ir = ModelArtifact.objects.create(name="ir", format="openvino", path=str(tmp_path))
    Agent.objects.create(name="Broken", slug="broken", backend="openvino", model=ir)
    Agent.objects.create(name="Fine", slug="fine", backend="llama_cpp", model=gguf_artifact)
    assert models_preload(queues=["openvino", "llama_cpp"]) == ["fine"]
