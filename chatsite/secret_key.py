"""The SECRET_KEY: never a known one.

Django signs session cookies, CSRF tokens and password-reset links with it, so anyone who knows the
key can forge an admin's session. Three sources, in order:

1. ``SECRET_KEY`` from the environment. A deployment with several hosts sets the same one on each.
   A key published with this project (the old development key) or Django's ``django-insecure-``
   placeholder refuses to start unless ``DEBUG`` is on.
2. ``REQUIRE_SECRET_KEY=1`` with none set: refuse to start (docker-compose sets it, so a missing key
   fails loudly instead of every container making its own).
3. Otherwise (the embedded default) a random key made once and kept in ``<data dir>/secret_key``,
   readable by its owner only, and read from there on every later start.
"""

from __future__ import annotations

import os
import secrets
import stat
import time
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

KEY_FILE_NAME = "secret_key"
# Keys that have been public: the development key earlier versions used when none was set.
KNOWN_KEYS = frozenset({"insecure-dev-key-set-SECRET_KEY-in-production"})


def secret_key_is_known(key: str) -> bool:
    return key in KNOWN_KEYS or key.startswith("django-insecure-")


def secret_key_load(*, value: str, data_dir: Path, debug: bool, required: bool) -> str:
    if value:
        if secret_key_is_known(value) and not debug:
            raise ImproperlyConfigured(
                "SECRET_KEY: this key is published (a development placeholder); set a long random one, e.g. "
                "python3 -c 'import secrets; print(secrets.token_urlsafe(50))'"
            )
        return value
    if required:
        raise ImproperlyConfigured("SECRET_KEY: must be set when REQUIRE_SECRET_KEY is on")
    return _key_file_read_or_create(Path(data_dir) / KEY_FILE_NAME)


def _key_file_read_or_create(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: two processes starting at once (daphne and a worker) agree on one key; the loser
        # reads the winner's file below. 0600 from the start: never readable by others, not even briefly.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(50) + "\n")
    for _ in range(50):  # the winner may not have written yet
        key = path.read_text().strip()
        if key:
            break
        time.sleep(0.02)
    else:
        raise ImproperlyConfigured(f"SECRET_KEY: {path} is empty; delete it to make a new key, or set SECRET_KEY")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        # Made by hand or copied with loose permissions: close it to the group and others.
        os.chmod(path, 0o600)
    if secret_key_is_known(key):
        raise ImproperlyConfigured(f"SECRET_KEY: {path} holds a published key; delete the file to make a new one")
    return key
