"""The secret key is never a known one, and a production environment passes Django's deploy checks.

Each case starts a fresh Python with its own environment and data folder, as a start of the
platform would (settings are read once per process).
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from chatsite.env import env_proxy_header

ROOT = Path(__file__).resolve().parents[2]
PUBLISHED_KEY = "insecure-dev-key-set-SECRET_KEY-in-production"

PROBE = """
import json, django
django.setup()
from django.conf import settings
print(json.dumps({
    "key": settings.SECRET_KEY,
    "proxy": settings.SECURE_PROXY_SSL_HEADER,
    "hsts": settings.SECURE_HSTS_SECONDS,
    "session_secure": settings.SESSION_COOKIE_SECURE,
    "csrf_secure": settings.CSRF_COOKIE_SECURE,
}))
"""


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    dropped = {"DATABASE_URL", "REDIS_URL", "DEBUG", "SECRET_KEY", "REQUIRE_SECRET_KEY", "ALLOWED_HOSTS"}
    env = {k: v for k, v in os.environ.items() if k not in dropped and not k.startswith("SECURE_")}
    env.update(CHATSITE_DATA_DIR=str(data_dir), DJANGO_SETTINGS_MODULE="chatsite.settings", **extra)
    return env


def _python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def _probe(data_dir: Path, **extra: str) -> dict[str, object]:
    result = _python(PROBE, _env(data_dir, **extra))
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def test_the_embedded_default_makes_a_random_key_once_and_keeps_it_private(tmp_path: Path) -> None:
    first = _probe(tmp_path)["key"]
    key_file = tmp_path / "secret_key"
    assert key_file.read_text().strip() == first
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert isinstance(first, str) and len(first) >= 50 and first != PUBLISHED_KEY
    # Every later start (daphne, a worker, manage.py) reads the same key: sessions survive a restart.
    assert _probe(tmp_path)["key"] == first
    # Another data folder, another platform: another key.
    other = tmp_path / "other"
    assert _probe(other)["key"] != first


def test_a_key_file_readable_by_others_is_closed_to_them(tmp_path: Path) -> None:
    key = secrets.token_urlsafe(50)
    (tmp_path / "secret_key").write_text(key + "\n")
    os.chmod(tmp_path / "secret_key", 0o644)
    assert _probe(tmp_path)["key"] == key
    assert stat.S_IMODE((tmp_path / "secret_key").stat().st_mode) == 0o600


def test_a_key_from_the_environment_wins(tmp_path: Path) -> None:
    key = secrets.token_urlsafe(50)
    assert _probe(tmp_path, SECRET_KEY=key)["key"] == key
    assert not (tmp_path / "secret_key").exists()


@pytest.mark.parametrize("key", [PUBLISHED_KEY, "django-insecure-" + "x" * 50])
def test_a_published_key_refuses_to_start_unless_debug_is_on(tmp_path: Path, key: str) -> None:
    result = _python(PROBE, _env(tmp_path, SECRET_KEY=key))
    assert result.returncode != 0
    assert "SECRET_KEY: this key is published" in result.stderr
    assert _probe(tmp_path, SECRET_KEY=key, DEBUG="1")["key"] == key


def test_a_required_key_that_is_missing_refuses_to_start(tmp_path: Path) -> None:
    result = _python(PROBE, _env(tmp_path, REQUIRE_SECRET_KEY="1"))
    assert result.returncode != 0
    assert "SECRET_KEY: must be set when REQUIRE_SECRET_KEY is on" in result.stderr
    assert not (tmp_path / "secret_key").exists()


def _production_env(tmp_path: Path) -> dict[str, str]:
    """docs/production.env, the documented production environment, with its placeholders filled in."""
    values = {}
    for line in (ROOT / "docs" / "production.env").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    for name, value in values.items():
        if "<" in value:
            values[name] = value.replace(value[value.index("<") : value.index(">") + 1], secrets.token_urlsafe(50))
    # The checks need no database or Redis connection; the embedded ones keep this test local.
    values.pop("DATABASE_URL")
    values.pop("REDIS_URL")
    return _env(tmp_path, **values)


def test_the_documented_production_environment_passes_the_deploy_checks(tmp_path: Path) -> None:
    env = _production_env(tmp_path)
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNINGS" not in result.stdout + result.stderr
    assert "no issues" in result.stdout
    started = _python(PROBE, env)
    assert started.returncode == 0, started.stderr[-3000:]
    probe = json.loads(started.stdout.strip().splitlines()[-1])
    assert probe["proxy"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert probe["hsts"] == 31536000 and probe["session_secure"] and probe["csrf_secure"]


def test_the_embedded_default_fails_the_deploy_checks_loudly(tmp_path: Path) -> None:
    """The same check on the defaults names what a deployment must set (so the test above can fail)."""
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0
    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in result.stderr + result.stdout


def test_the_proxy_header_reads_as_django_wants_it() -> None:
    os.environ["TEST_PROXY_HEADER"] = "X-Forwarded-Proto=https"
    try:
        assert env_proxy_header("TEST_PROXY_HEADER") == ("HTTP_X_FORWARDED_PROTO", "https")
        os.environ["TEST_PROXY_HEADER"] = "HTTP_X_FORWARDED_SSL=on"
        assert env_proxy_header("TEST_PROXY_HEADER") == ("HTTP_X_FORWARDED_SSL", "on")
        os.environ["TEST_PROXY_HEADER"] = "X-Forwarded-Proto"
        with pytest.raises(Exception, match="TEST_PROXY_HEADER: expected HEADER=value"):
            env_proxy_header("TEST_PROXY_HEADER")
    finally:
        del os.environ["TEST_PROXY_HEADER"]
    assert env_proxy_header("TEST_PROXY_HEADER") is None
