"""One embedded platform (daphne, SQLite, replies in-process) for the ``/v1`` tests of this
package, started once: the bundled model on llama.cpp (``assistant``) and its OpenVINO IR
(``assistant-ov``, the IR made once by the pipeline's export and cached)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from openai import OpenAI

from pipeline.convert import openvino_ir_for_bundled
from tests.platform_setup import prepare
from tools.launch import Platform, free_port, platform_env

OPENVINO_AGENT = """
from agents.models import Agent
from inference.models import ModelArtifact
bundled = Agent.objects.get(slug="assistant")
ir, _ = ModelArtifact.objects.get_or_create(name="SmolLM2 IR (tests)", format="openvino", path=IR_DIR)
Agent.objects.update_or_create(slug="assistant-ov", defaults=dict(
    name="Assistant (OpenVINO)", model=ir, backend="openvino", system_prompt=bundled.system_prompt,
    max_tokens=bundled.max_tokens, temperature=bundled.temperature))
"""


@pytest.fixture(scope="package")
def v1_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    data = tmp_path_factory.mktemp("v1")
    env = platform_env(data_dir=data, database_url=None, redis_url=None)
    (data / "logs").mkdir()
    running = Platform(env=env, port=free_port(), log_dir=data / "logs")
    code = f"IR_DIR = {str(openvino_ir_for_bundled())!r}\n" + OPENVINO_AGENT
    running.tokens = prepare(env, ("alice", "bob"), code=code)
    running.start_daphne()
    yield running
    running.stop_all()


@pytest.fixture(scope="module")
def platform(v1_platform: Platform) -> Platform:
    return v1_platform


def client_for(platform: Platform, token: str) -> OpenAI:
    """The official client as developers make it, with no retries (a retry would be a new session)."""
    return OpenAI(base_url=f"{platform.http}/v1", api_key=token, max_retries=0, timeout=180)


@pytest.fixture(scope="module")
def alice(platform: Platform) -> OpenAI:
    return client_for(platform, platform.tokens["alice"])
