"""A test platform's database, made quickly: migrated once into a template, copied per platform,
and set up (bootstrap, users, a test's own rows, static files) in one Python process.

Each platform the tests start (the integration package's, the browser tests', each fault test's
own) used to run three ``manage.py`` processes, migrate, bootstrap and a shell making the users,
and the browser ones two more (collectstatic, a second agent): each a Django start-up, migrate
the slowest. Now the migrated schema is a template kept between runs, named after the Django
version and the project's migrations (a changed migration makes a new one): a SQLite file copied
into the platform's data folder, or a PostgreSQL database created with ``TEMPLATE``. What follows
runs in one process (``python -m tests.platform_setup``), which still runs ``migrate`` (a no-op on
a copy of the template; the whole schema on a cluster of its own, as the database outage tests
start) so that no platform can start on a schema older than its code. Static files are collected
once per test run into a folder the platforms share.

    prepare(env, ("alice", "bob"))                  # the users' API tokens
    prepare_with_output(env, ("alice",), code=...)  # and what ``code`` printed
"""

from __future__ import annotations

import atexit
import fcntl
import hashlib
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from importlib.metadata import version
from pathlib import Path

import psycopg

from pipeline.hf_bundled import hf_for_bundled
from tools.launch import ROOT

PG_ADMIN = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
TEMPLATES = Path(tempfile.gettempdir()) / "chatsite-test-templates"
PROJECT_APPS = ("agents", "inference", "sessions_app", "pipeline", "chatsite")
TOKENS_MARK = "platform-setup-tokens: "


def schema_key() -> str:
    """Django's version and every project migration's text: what the migrated schema depends on."""
    digest = hashlib.sha256(version("django").encode())
    for app in PROJECT_APPS:
        for path in sorted((ROOT / app / "migrations").glob("*.py")):
            digest.update(f"{app}/{path.name}".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


@contextmanager
def _locked(name: str) -> Iterator[None]:
    """An exclusive lock between processes (the two test groups build a template at once)."""
    TEMPLATES.mkdir(parents=True, exist_ok=True)
    with open(TEMPLATES / f"{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _run(env: dict[str, str], argv: list[str], stdin: str = "") -> str:
    result = subprocess.run(
        [sys.executable, *argv], cwd=ROOT, env=env, input=stdin, capture_output=True, text=True, timeout=600
    )
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    return result.stdout


def _migrate_env(data_dir: Path, database_url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(DJANGO_SETTINGS_MODULE="chatsite.settings", CHATSITE_DATA_DIR=str(data_dir))
    if database_url:
        env["DATABASE_URL"] = database_url
    return env


def sqlite_template() -> Path:
    """The migrated SQLite file, made once (a run holding the lock makes it; others wait)."""
    path = TEMPLATES / f"sqlite-{schema_key()}.sqlite3"
    with _locked(path.name):
        if not path.exists():
            with tempfile.TemporaryDirectory(prefix="chatsite-template-") as tmp:
                _run(_migrate_env(Path(tmp), None), ["manage.py", "migrate", "--noinput", "-v0"])
                # The backup API copies the database whole, whatever its write-ahead log holds.
                built = TEMPLATES / f".{path.name}.{os.getpid()}"
                with closing(sqlite3.connect(Path(tmp) / "db.sqlite3")) as src, closing(sqlite3.connect(built)) as dst:
                    src.backup(dst)
                os.replace(built, path)
            for old in TEMPLATES.glob("sqlite-*.sqlite3"):
                if old != path:
                    old.unlink(missing_ok=True)
    return path


def _server(admin_url: str) -> str:
    return admin_url.rsplit("/", 1)[0]


def postgres_template(admin_url: str = PG_ADMIN) -> str:
    """The migrated template database on the server of ``admin_url``, made once. It is built under
    another name and renamed when complete, so a run stopped mid-migrate leaves no half template."""
    name = f"chatsite_tpl_{schema_key()}"
    with _locked(f"pg-{name}"), psycopg.connect(admin_url, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return name
        building = f"{name}_building"
        conn.execute(f'DROP DATABASE IF EXISTS "{building}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{building}"')
        with tempfile.TemporaryDirectory(prefix="chatsite-template-") as tmp:
            env = _migrate_env(Path(tmp), f"{_server(admin_url)}/{building}")
            _run(env, ["manage.py", "migrate", "--noinput", "-v0"])
        conn.execute(f'ALTER DATABASE "{building}" RENAME TO "{name}"')
        # Older schemas' templates: no run of this checkout uses them any more.
        stale = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'chatsite\\_tpl\\_%%' AND datname <> %s", (name,)
        ).fetchall()
        for (old,) in stale:
            conn.execute(f'DROP DATABASE IF EXISTS "{old}" WITH (FORCE)')
    return name


def database_create(name: str, admin_url: str = PG_ADMIN) -> str:
    """A new database ``name``, a copy of the migrated template; its URL."""
    template = postgres_template(admin_url)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        for attempt in range(20):
            try:
                conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
                break
            except psycopg.errors.ObjectInUse:  # another run is copying it this instant
                if attempt == 19:
                    raise
                time.sleep(0.25)
    return f"{_server(admin_url)}/{name}"


def database_drop(name: str, admin_url: str = PG_ADMIN) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


_static: dict[str, Path] = {}


def static_root() -> str:
    """A STATIC_ROOT shared by this run's platforms (removed when the run ends)."""
    if "root" not in _static:
        _static["root"] = Path(tempfile.mkdtemp(prefix="chatsite-static-"))
        atexit.register(shutil.rmtree, _static["root"], True)
    return str(_static["root"])


CACHED_HF = """
import json
from pathlib import Path
from inference.bundled import BUNDLED_NAME
from inference.models import ModelArtifact
bundled = ModelArtifact.objects.get(name=BUNDLED_NAME)
size = sum(p.stat().st_size for p in Path(HF_DIR).rglob("*") if p.is_file())
hf, _ = ModelArtifact.objects.get_or_create(name="SmolLM2 HF f32 (cached conversion)", defaults=dict(
    format="hf", path=HF_DIR, parent=bundled, quantization="f32", size_bytes=size,
    context_length=bundled.context_length, details={"cached_by": "pipeline.hf_bundled"}))
print(json.dumps(hf.pk))
"""


def cached_hf_code() -> str:
    """Python for a platform's shell that registers the bundled GGUF's Hugging Face conversion as
    an artifact under the bundled one, and prints its id: what a ``convert`` job ``to=hf`` makes
    (float32, the tokenizer fixed), taken from pipeline.hf_bundled's cache (made there once, kept
    between runs) instead of converting again. For tests that need an HF model, not the tests of
    the convert job itself."""
    return f"HF_DIR = {str(hf_for_bundled(log=print))!r}\n" + CACHED_HF


def prepare_with_output(
    env: dict[str, str], users: tuple[str, ...], *, code: str = "", static: bool = False
) -> tuple[dict[str, str], str]:
    """Migrate (a copy of the template), bootstrap, create ``users``, run ``code``, and with
    ``static`` collect the static files into ``env["STATIC_ROOT"]`` (once per run: set it to
    ``static_root()``); return the users' API tokens and what ``code`` printed.

    ``env`` is the platform's (tools.launch.platform_env); without ``DATABASE_URL`` its SQLite
    file is copied from the template, with one its database is expected to exist (made by
    ``database_create``, or empty on a cluster of its own)."""
    if not env.get("DATABASE_URL"):
        db = Path(env["CHATSITE_DATA_DIR"]) / "db.sqlite3"
        if not db.exists():
            db.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(sqlite_template(), db)
    collect = static and not (Path(env["STATIC_ROOT"]) / ".collected").exists()
    spec = {"users": list(users), "code": code, "collectstatic": collect}
    out = _run(env, ["-m", "tests.platform_setup"], stdin=json.dumps(spec))
    lines = out.splitlines()
    tokens = json.loads(next(line for line in reversed(lines) if line.startswith(TOKENS_MARK))[len(TOKENS_MARK) :])
    if collect:
        (Path(env["STATIC_ROOT"]) / ".collected").touch()
    return tokens, "\n".join(line for line in lines if not line.startswith(TOKENS_MARK))


def prepare(env: dict[str, str], users: tuple[str, ...], *, code: str = "", static: bool = False) -> dict[str, str]:
    """As ``prepare_with_output``; only the tokens."""
    return prepare_with_output(env, users, code=code, static=static)[0]


def _main() -> None:
    """The set-up process: what ``prepare`` asks, read from stdin as JSON. Each user gets what
    tools.launch.prepare gives: the password ``<name>-password-1`` and an API token."""
    import django

    django.setup()
    # Only after django.setup(): this module is also imported by the test process, where the
    # platform's settings are not the ones loaded.
    from django.contrib.auth.models import User
    from django.core.management import call_command

    from sessions_app.tokens import token_create

    spec = json.load(sys.stdin)
    call_command("migrate", interactive=False, verbosity=0)
    call_command("bootstrap", verbosity=0, stdout=io.StringIO())
    # A password's hash costs half a second of CPU (PBKDF2, on purpose); the same password's hash
    # is valid in every platform, so each user's is made once and kept beside the templates.
    hashes_file = TEMPLATES / f"passwords-django-{version('django')}.json"
    hashes = json.loads(hashes_file.read_text()) if hashes_file.exists() else {}
    tokens = {}
    for name in spec["users"]:
        user, _ = User.objects.get_or_create(username=name)
        if name not in hashes:
            user.set_password(f"{name}-password-1")
            hashes[name] = user.password
        user.password = hashes[name]
        user.save()
        tokens[name] = token_create(user=user, name="launch")[1]
    if not hashes_file.exists() or json.loads(hashes_file.read_text()) != hashes:
        TEMPLATES.mkdir(parents=True, exist_ok=True)
        written = hashes_file.with_name(f".{hashes_file.name}.{os.getpid()}")
        written.write_text(json.dumps(hashes))
        os.replace(written, hashes_file)  # whole or not at all, for a set-up running beside this one
    if spec["code"]:
        exec(spec["code"], {"__name__": "__setup__"})
    if spec["collectstatic"]:
        call_command("collectstatic", interactive=False, verbosity=0)
    print(TOKENS_MARK + json.dumps(tokens), flush=True)


if __name__ == "__main__":
    _main()
