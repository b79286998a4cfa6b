"""Schemathesis generates requests from the OpenAPI schema for every endpoint; none may crash.

A platform of its own (daphne, SQLite, Redis and a worker), so the fuzzed sessions and messages do
not load the shared one; its agent answers in at most 8 tokens, so the fuzzed replies are quick.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from tools.launch import VENV_BIN, Platform, free_port, manage, platform_env, prepare

pytestmark = pytest.mark.slow

REDIS = "redis://127.0.0.1:6379/10"


@pytest.fixture(scope="module")
def quiet_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    import redis

    redis.Redis.from_url(REDIS).flushdb()
    data = tmp_path_factory.mktemp("fuzz")
    env = platform_env(
        data_dir=data, database_url=f"sqlite:///{data}/fuzz.sqlite3", redis_url=REDIS, API_RATE_LIMIT="100000/minute"
    )
    (data / "logs").mkdir()
    platform = Platform(env=env, port=free_port(), log_dir=data / "logs")
    platform.tokens = prepare(env, ("fuzzer",))
    manage(env, "shell", "-c", "from agents.models import Agent; Agent.objects.update(max_tokens=8)")
    platform.start_daphne()
    platform.start_worker()
    yield platform
    platform.stop_all()


def test_no_generated_request_gets_a_server_error(quiet_platform: Platform) -> None:
    result = subprocess.run(
        [
            str(VENV_BIN / "schemathesis"),
            "run",
            f"{quiet_platform.http}/api/schema/",
            "--url",
            quiet_platform.http,
            "-H",
            f"Authorization: Token {quiet_platform.tokens['fuzzer']}",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "25",
            # The stream endpoint waits for a reply no worker will write; token deletion would
            # revoke the fuzzer's own token and leave the rest of the run unauthenticated.
            "--exclude-path-regex",
            "/stream/$",
            "--exclude-path",
            "/api/tokens/{token_id}/",
            "--no-color",
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=900,
    )
    log = (quiet_platform.log_dir / "daphne.log").read_text()
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:] + log[-3000:]
    for operation in ("/v1/chat/completions", "/api/sessions/{session_id}/messages/", "/api/agents/"):
        assert operation in result.stdout, result.stdout[-3000:]
    assert "Traceback" not in log, log[-6000:]
