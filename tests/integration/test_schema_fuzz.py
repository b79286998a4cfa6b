"""Schemathesis generates requests from the OpenAPI schema for every operation, as alice and as
nobody, on a platform where bob has a session, messages and a token: no request gets a server
error, nothing of bob's reaches a response, and without credentials everything is refused.

A platform of its own, as deployed (daphne, PostgreSQL, Redis and a worker), so the fuzzed
sessions and messages do not load the shared one, and PostgreSQL refuses what SQLite would take (a
NUL in text); its agent answers in at most 8 tokens, so the fuzzed replies are quick. The checks
are schemathesis checks in ``schema_fuzz_hooks``, which reads bob's ids and texts from the
environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.chat_client import api
from tests.integration.services import scratch_database
from tests.platform_setup import prepare
from tools.launch import ROOT, VENV_BIN, Platform, free_port, platform_env

pytestmark = pytest.mark.slow

REDIS = "redis://127.0.0.1:6379/10"
EXAMPLES = "15"  # per operation: the whole run takes a few minutes on two cores


@dataclass
class Bob:
    session: int
    messages: list[int]
    token: int
    texts: list[str]

    def forbidden(self) -> str:
        return json.dumps(
            {"sessions": [self.session], "messages": self.messages, "tokens": [self.token], "texts": self.texts}
        )


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Platform, Bob]]:
    import redis

    redis.Redis.from_url(REDIS).flushdb()
    data = tmp_path_factory.mktemp("fuzz")
    with scratch_database() as database_url:
        env = platform_env(
            data_dir=data, database_url=database_url, redis_url=REDIS,
            API_RATE_LIMIT="100000/minute", API_ANON_RATE_LIMIT="100000/minute",
        )  # fmt: skip
        (data / "logs").mkdir()
        platform = Platform(env=env, port=free_port(), log_dir=data / "logs")
        try:
            platform.tokens = prepare(
                env, ("alice", "bob"), code="from agents.models import Agent; Agent.objects.update(max_tokens=8)"
            )
            platform.start_daphne()
            platform.start_worker()
            yield platform, _seed_bob(platform)
        finally:
            platform.stop_all()
            redis.Redis.from_url(REDIS).flushdb()


def _seed_bob(platform: Platform) -> Bob:
    """Bob's session and message, with texts found nowhere else."""
    mark = uuid.uuid4().hex
    token = platform.tokens["bob"]
    status, session = api(platform.http, token, "POST", "/api/sessions/", {"agent": "assistant", "title": f"T{mark}"})
    assert status == 201, session
    path = f"/api/sessions/{session['id']}/messages/"
    status, sent = api(platform.http, token, "POST", path, {"content": f"M{mark}", "client_id": f"C{mark}"})
    assert status == 202, sent
    status, tokens = api(platform.http, token, "GET", "/api/tokens/")
    assert status == 200, tokens
    return Bob(
        session=session["id"],
        messages=[m["id"] for m in sent],
        token=tokens["results"][0]["id"] if isinstance(tokens, dict) else tokens[0]["id"],
        texts=[f"T{mark}", f"M{mark}", f"C{mark}", token],
    )


def _schemathesis(
    platform: Platform, bob: Bob, as_user: str | None, *checks: str, only: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    headers = ["-H", f"Authorization: Token {platform.tokens[as_user]}"] if as_user else []
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": str(Path(__file__).with_name("schema_fuzz_hooks.py")),
        "FUZZ_FORBIDDEN": bob.forbidden(),
        "FUZZ_AS": as_user or "nobody",
    }
    return subprocess.run(
        [
            str(VENV_BIN / "schemathesis"), "run", f"{platform.http}/api/schema/", "--url", platform.http, *headers,
            "--checks", ",".join(("not_a_server_error", *checks)),
            "--max-examples", EXAMPLES,
            # Token deletion would revoke the fuzzer's own token and leave the rest of the run
            # unauthenticated (deleting bob's is tried on its own below).
            "--exclude-path", "/api/tokens/{token_id}/",
            *only,
            "--no-color",
        ],  # fmt: skip
        capture_output=True, text=True, timeout=900, cwd=ROOT, env=env,
    )  # fmt: skip


def _daphne_log(platform: Platform, start: int = 0) -> str:
    with (platform.log_dir / "daphne.log").open("rb") as log:
        log.seek(start)
        return log.read().decode(errors="replace")


def _failed(platform: Platform, result: subprocess.CompletedProcess) -> str:
    return result.stdout[-6000:] + result.stderr[-2000:] + _daphne_log(platform)[-3000:]


def test_alice_gets_no_server_error_and_nothing_of_bobs(fuzzed: tuple[Platform, Bob]) -> None:
    platform, bob = fuzzed
    start = (platform.log_dir / "daphne.log").stat().st_size
    result = _schemathesis(platform, bob, "alice", "nothing_of_bobs")
    assert result.returncode == 0, _failed(platform, result)
    for operation in ("/v1/chat/completions", "/api/sessions/{session_id}/messages/", "/api/agents/"):
        assert operation in result.stdout, result.stdout[-3000:]
    assert "Traceback" not in _daphne_log(platform, start), _failed(platform, result)
    _bob_is_intact(platform, bob)


def test_nobody_is_refused_everything(fuzzed: tuple[Platform, Bob]) -> None:
    platform, bob = fuzzed
    start = (platform.log_dir / "daphne.log").stat().st_size
    result = _schemathesis(platform, bob, None, "nothing_of_bobs", "refused_to_nobody")
    assert result.returncode == 0, _failed(platform, result)
    assert "/api/sessions/{session_id}/" in result.stdout, result.stdout[-3000:]
    assert "Traceback" not in _daphne_log(platform, start), _failed(platform, result)
    _bob_is_intact(platform, bob)


def test_the_check_sees_bobs_things_where_they_are_shown(fuzzed: tuple[Platform, Bob]) -> None:
    """The check is live: fuzzing as bob himself, his session page shows what it looks for."""
    platform, bob = fuzzed
    only = ("--include-operation-id", "api_sessions_retrieve", "--phases", "fuzzing")
    result = _schemathesis(platform, bob, "bob", "nothing_of_bobs", only=only)
    assert result.returncode != 0 and "nothing_of_bobs" in result.stdout, _failed(platform, result)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/sessions/{session}/"),
        ("PATCH", "/api/sessions/{session}/"),
        ("DELETE", "/api/sessions/{session}/"),
        ("GET", "/api/sessions/{session}/messages/"),
        ("POST", "/api/sessions/{session}/messages/"),
        ("GET", "/api/sessions/{session}/messages/{message}/"),
        ("PATCH", "/api/sessions/{session}/messages/{message}/"),
        ("GET", "/api/sessions/{session}/messages/{reply}/stream/"),
        ("POST", "/api/sessions/{session}/messages/{reply}/pick/"),
        ("POST", "/api/sessions/{session}/stop/"),
        ("POST", "/api/sessions/{session}/regenerate/"),
        ("GET", "/api/sessions/{own}/messages/{message}/"),
        ("PATCH", "/api/sessions/{own}/messages/{message}/"),
        ("POST", "/api/sessions/{own}/messages/{reply}/pick/"),
        ("DELETE", "/api/tokens/{token}/"),
    ],
)
def test_bobs_things_are_not_found_for_alice(fuzzed: tuple[Platform, Bob], method: str, path: str) -> None:
    platform, bob = fuzzed
    status, own = api(platform.http, platform.tokens["alice"], "POST", "/api/sessions/", {"agent": "assistant"})
    assert status == 201, own
    url = path.format(session=bob.session, message=bob.messages[0], reply=bob.messages[-1], token=bob.token,
                      own=own["id"])  # fmt: skip
    body: Any = {"content": "mine now", "title": "mine now"} if method in ("POST", "PATCH") else None
    status, answer = api(platform.http, platform.tokens["alice"], method, url, body)
    assert status == 404, (status, answer)
    assert not any(text in json.dumps(answer) for text in bob.texts), answer
    _bob_is_intact(platform, bob)


def _bob_is_intact(platform: Platform, bob: Bob) -> None:
    token = platform.tokens["bob"]
    status, session = api(platform.http, token, "GET", f"/api/sessions/{bob.session}/")
    assert status == 200 and session["title"] == bob.texts[0], session
    status, messages = api(platform.http, token, "GET", f"/api/sessions/{bob.session}/messages/")
    assert status == 200 and [m["id"] for m in messages["results"]] == bob.messages, messages
    assert messages["results"][0]["content"] == bob.texts[1]
    status, tokens = api(platform.http, token, "GET", "/api/tokens/")
    assert status == 200, tokens
