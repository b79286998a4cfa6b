from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from rest_framework.test import APIClient

from agents.models import Agent
from inference.models import ModelArtifact
from sessions_app.tokens import token_create
from tools.launch import Platform, PrivateRedis


@pytest.fixture
def private_redis(tmp_path: Any) -> Iterator[PrivateRedis]:
    """A redis-server of the test's own, on a free port: one the test may kill and start again."""
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def user(db: Any) -> User:
    return User.objects.create_user("alice", password="alice-password-1")


@pytest.fixture
def other_user(db: Any) -> User:
    return User.objects.create_user("mallory", password="mallory-password-1")


# What an operator of the model pipeline is given (the API asks for them as the admin does).
PIPELINE_PERMISSIONS = ("add_agent", "change_agent", "delete_agent", "add_job", "change_job", "add_modelartifact")


def grant(user: User, *codenames: str) -> User:
    """``user`` holding these model permissions (agents and inference apps)."""
    perms = Permission.objects.filter(content_type__app_label__in=("agents", "inference"), codename__in=codenames)
    assert perms.count() == len(codenames), codenames
    user.user_permissions.add(*perms)
    return User.objects.get(pk=user.pk)  # Django caches a user's permissions on the object


@pytest.fixture
def staff(db: Any) -> User:
    """A staff operator: staff, with the permissions to define agents and run pipeline jobs."""
    user = User.objects.create_user("stella", password="stella-password-1", is_staff=True)
    return grant(user, *PIPELINE_PERMISSIONS)


@pytest.fixture
def superuser(db: Any) -> User:
    return User.objects.create_superuser("root", "root@example.com", "root-password-1")


def _client_for(user: User | None) -> APIClient:
    client = APIClient()
    if user is not None:
        _, secret = token_create(user=user, name="tests")
        client.credentials(HTTP_AUTHORIZATION=f"Token {secret}")
    return client


@pytest.fixture
def api(user: User) -> APIClient:
    return _client_for(user)


@pytest.fixture
def other_api(other_user: User) -> APIClient:
    return _client_for(other_user)


@pytest.fixture
def staff_api(staff: User) -> APIClient:
    return _client_for(staff)


@pytest.fixture
def anon_api() -> APIClient:
    return APIClient()


@pytest.fixture
def gguf_artifact(db: Any, tmp_path: Any) -> ModelArtifact:
    path = tmp_path / "tiny.gguf"
    path.write_bytes(b"GGUF")
    return ModelArtifact.objects.create(name="tiny", format="gguf", path=str(path), quantization="Q4_1")


@pytest.fixture
def agent(gguf_artifact: ModelArtifact) -> Agent:
    return Agent.objects.create(name="Helper", slug="helper", backend="llama_cpp", model=gguf_artifact)


@pytest.fixture(autouse=True)
def fresh_live_buffer() -> None:
    """Each test starts with an empty in-memory live buffer: message ids repeat between tests."""
    from sessions_app import live

    live._buffer = None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """A test that ran replies in-process ends the embedded lanes and their reapers when its body
    ends, before its fixtures empty the database: a reply or reaper thread still writing then
    made the flush fail ("database table is locked"), and a reaper left running afterwards read a
    database later tests do not open to it."""
    yield
    from inference.runtime.pool import lanes_stop

    lanes_stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed test on a running platform shows the end of each of its process logs (daphne,
    workers): what the server did is often the only clue to a failure seen in CI."""
    outcome = yield
    report = outcome.get_result()
    if not report.failed or call.when != "call":
        return
    funcargs = getattr(item, "funcargs", {})
    for value in {id(v): v for v in funcargs.values() if isinstance(v, Platform)}.values():
        for log in sorted(value.log_dir.glob("*.log")):
            text = log.read_text(errors="replace")
            report.sections.append((f"platform log {log.name} (last 6000 characters)", text[-6000:]))
