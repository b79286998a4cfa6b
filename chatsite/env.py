"""Read settings from the environment, failing loudly with the variable's name.

Every reader raises ``ImproperlyConfigured`` whose message starts with the variable's name, so a
bad value stops start-up with a message an operator can act on.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _raw(name: str) -> str | None:
    value = os.environ.get(name)
    if value is None:
        return None
    return value.strip()


def env_str(name: str, default: str) -> str:
    value = _raw(name)
    return default if value is None or value == "" else value


def env_bool(name: str, default: bool) -> bool:
    value = _raw(name)
    if value is None:
        return default
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}: expected true/false (1/0, yes/no, on/off), got {value!r}")


def env_int(name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
    value = _raw(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}: expected an integer, got {value!r}") from None
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name}: must be at least {minimum}, got {number}")
    if maximum is not None and number > maximum:
        raise ImproperlyConfigured(f"{name}: must be at most {maximum}, got {number}")
    return number


def env_float(name: str, default: float, *, minimum: float | None = None) -> float:
    value = _raw(name)
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}: expected a number, got {value!r}") from None
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name}: must be at least {minimum}, got {number}")
    return number


def env_list(name: str, default: list[str]) -> list[str]:
    value = _raw(name)
    if value is None:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


def env_path(name: str, default: Path) -> Path:
    value = _raw(name)
    if value is None or value == "":
        return default
    return Path(value).expanduser()


def env_database(name: str, default_sqlite: Path) -> dict[str, Any]:
    """``DATABASE_URL`` as Django's DATABASES entry; SQLite at ``default_sqlite`` when unset."""
    import dj_database_url

    value = _raw(name)
    if value is None or value == "":
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(default_sqlite),
            # Writers wait for the lock rather than fail while a reply saves its partial text.
            "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"},
            # Kept open between requests and tasks: opening one (and its PRAGMA) cost each request
            # and each reply a few milliseconds before its first token. A file has no client limit,
            # so the threads' connections that ASGI leaves behind (see below) cost no server slots.
            # A file needs no health check (a query per request).
            "CONN_MAX_AGE": 60,
        }
    try:
        # No persistent connections on a database server: under ASGI (daphne) Django runs each
        # request's sync code on a thread of its own, so a kept connection outlives its thread and
        # they pile up ("FATAL: sorry, too many clients already" under the schema fuzz, twice in one
        # clean-clone run). Django's own advice for ASGI: CONN_MAX_AGE 0, or a pool.
        config = dict(dj_database_url.parse(value, conn_max_age=0))
    except Exception as exc:  # dj-database-url raises several types for a bad URL
        raise ImproperlyConfigured(f"{name}: cannot read {value!r} as a database URL ({exc})") from None
    if not config.get("ENGINE"):
        raise ImproperlyConfigured(f"{name}: unknown database scheme in {value!r}")
    if config["ENGINE"] != "django.db.backends.sqlite3" and not config.get("NAME"):
        raise ImproperlyConfigured(f"{name}: the URL names no database: {value!r}")
    return config


def env_redis_url(name: str) -> str | None:
    value = _raw(name)
    if value is None or value == "":
        return None
    parsed = urlparse(value)
    if parsed.scheme not in {"redis", "rediss", "unix"}:
        raise ImproperlyConfigured(f"{name}: expected a redis://, rediss:// or unix:// URL, got {value!r}")
    if parsed.scheme != "unix" and not parsed.hostname:
        raise ImproperlyConfigured(f"{name}: the URL names no host: {value!r}")
    try:
        parsed.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        raise ImproperlyConfigured(f"{name}: the port is not a number in {value!r}") from None
    return value


def redis_channel_prefix(url: str | None) -> str:
    """The channel layer's prefix for ``url``: its database number in it, as ``asgi.db9.``."""
    from redis.connection import parse_url

    return f"asgi.db{parse_url(url).get('db', 0) if url else 0}."


def env_rate(name: str, default: str) -> str:
    """A rate such as ``600/minute`` (DRF's throttle format: N per second, minute, hour or day)."""
    value = env_str(name, default)
    number, _, period = value.partition("/")
    if not number.isdigit() or period[:1] not in ("s", "m", "h", "d"):
        raise ImproperlyConfigured(f"{name}: expected a rate like 600/minute, got {value!r}")
    return value


def env_proxy_header(name: str) -> tuple[str, str] | None:
    """``HEADER=value`` as Django's SECURE_PROXY_SSL_HEADER, e.g. ``X-Forwarded-Proto=https`` (or the
    META form ``HTTP_X_FORWARDED_PROTO=https``): a request carrying it counts as HTTPS. Set it only
    behind a proxy that always sets (or strips) that header."""
    value = _raw(name)
    if not value:
        return None
    header, sep, expected = value.partition("=")
    header, expected = header.strip(), expected.strip()
    if not sep or not header or not expected:
        raise ImproperlyConfigured(f"{name}: expected HEADER=value such as X-Forwarded-Proto=https, got {value!r}")
    meta = header.upper().replace("-", "_")
    if not meta.startswith("HTTP_"):
        meta = "HTTP_" + meta
    return meta, expected
