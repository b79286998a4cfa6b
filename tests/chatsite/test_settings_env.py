"""Settings come from the environment: embedded by default, distributed with DATABASE_URL and
REDIS_URL (checked against this machine's real PostgreSQL and Redis), loud on bad values."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")
REDIS = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")

PROBE = """
import json, django
django.setup()
from django.conf import settings
from django.db import connection
from channels.layers import get_channel_layer
from chatsite.celery import app
connection.ensure_connection()
print(json.dumps({
    "db_vendor": connection.vendor,
    "db_name": str(settings.DATABASES["default"]["NAME"]),
    "embedded": settings.EMBEDDED,
    "layer": type(get_channel_layer()).__name__,
    "broker": app.conf.broker_url,
    "debug": settings.DEBUG,
    "allowed_hosts": settings.ALLOWED_HOSTS,
}))
"""


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DEBUG", "ALLOWED_HOSTS")}
    env["CHATSITE_DATA_DIR"] = str(tmp_path)
    env["DJANGO_SETTINGS_MODULE"] = "chatsite.settings"
    env.update(extra)
    return env


def _run(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def _probe(tmp_path: Path, **extra: str) -> dict[str, Any]:
    result = _run(PROBE, _env(tmp_path, **extra))
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def test_with_nothing_set_the_platform_is_embedded(tmp_path: Path) -> None:
    probe = _probe(tmp_path)
    assert probe["db_vendor"] == "sqlite"
    assert probe["db_name"] == str(tmp_path / "db.sqlite3")
    assert probe["embedded"] is True
    assert probe["layer"] == "InMemoryChannelLayer"
    assert probe["debug"] is False


def test_a_sqlite_database_url_is_read(tmp_path: Path) -> None:
    probe = _probe(tmp_path, DATABASE_URL=f"sqlite:///{tmp_path}/other.db")
    assert probe["db_vendor"] == "sqlite" and probe["db_name"].endswith("other.db")


@pytest.fixture
def postgres_url() -> Any:
    import psycopg

    name = f"chatsite_settings_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_URL.replace("postgres://", "postgresql://"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(PG_ADMIN_URL.replace("postgres://", "postgresql://"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_database_url_and_redis_url_switch_to_postgres_and_redis(tmp_path: Path, postgres_url: str) -> None:
    env = _env(tmp_path, DATABASE_URL=postgres_url, REDIS_URL=REDIS)
    probe = _probe(tmp_path, DATABASE_URL=postgres_url, REDIS_URL=REDIS)
    assert probe["db_vendor"] == "postgresql"
    assert probe["embedded"] is False
    assert probe["layer"] == "RedisChannelLayer"
    assert probe["broker"] == REDIS
    # The schema migrates on the real server, and the Redis layer really carries a message.
    migrate = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert migrate.returncode == 0, migrate.stderr
    roundtrip = _run(
        "import django; django.setup()\n"
        "import asyncio\n"
        "from channels.layers import get_channel_layer\n"
        "layer = get_channel_layer()\n"
        "async def roundtrip():\n"
        "    name = await layer.new_channel()\n"
        "    await layer.group_add('g', name)\n"
        "    await layer.group_send('g', {'type': 'hello', 'n': 7})\n"
        "    return (await asyncio.wait_for(layer.receive(name), 10))['n']\n"
        "print(asyncio.run(roundtrip()))\n"
        "from django.db import connection\n"
        "with connection.cursor() as c:\n"
        "    c.execute('select count(*) from django_migrations'); print(c.fetchone()[0] > 10)\n",
        env,
    )
    assert roundtrip.returncode == 0, roundtrip.stderr
    assert roundtrip.stdout.split() == ["7", "True"]


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("DATABASE_URL", "nosuchdb://x/y", "DATABASE_URL"),
        ("DATABASE_URL", "not a url", "DATABASE_URL"),
        ("REDIS_URL", "http://127.0.0.1:6379", "REDIS_URL: expected a redis://"),
        ("REDIS_URL", "redis://127.0.0.1:notaport/0", "REDIS_URL"),
        ("DEBUG", "maybe", "DEBUG: expected true/false"),
        ("EMBEDDED_REPLY_THREADS", "0", "EMBEDDED_REPLY_THREADS: must be at least 1"),
        ("MESSAGE_MAX_CHARS", "lots", "MESSAGE_MAX_CHARS: expected an integer"),
        ("LOG_LEVEL", "LOUD", "LOG_LEVEL"),
    ],
)
def test_a_bad_value_stops_start_up_naming_the_variable(tmp_path: Path, name: str, value: str, message: str) -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=_env(tmp_path, **{name: value}),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert message in result.stderr


def test_debug_and_allowed_hosts_come_from_the_environment(tmp_path: Path) -> None:
    probe = _probe(tmp_path, DEBUG="1", ALLOWED_HOSTS="chat.example.org, .example.net")
    assert probe["debug"] is True
    assert probe["allowed_hosts"] == ["chat.example.org", ".example.net"]
