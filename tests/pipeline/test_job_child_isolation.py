"""A job step (and a conversion child) runs third-party code on files staff provide: it sees an
allowlisted environment, never the worker's secrets; it is started without ``preexec_fn`` (unsafe
in a threaded worker) and still dies with the worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from inference import children
from inference.models import Job
from pipeline.convert.child import run_command
from pipeline.jobs import runner

pytestmark = pytest.mark.usefixtures("no_dispatch")

SECRETS = {
    "SECRET_KEY": "s3cret-key",
    "DATABASE_URL": "postgres://chatsite:pw@db/chatsite",
    "REDIS_URL": "redis://:pw@redis:6379/0",
    "OPENAI_API_KEY": "sk-test",
    "METRICS_TOKEN": "metrics-token",
    "HF_TOKEN": "hf_token",
    "VLLM_API_KEY": "vllm-key",
    "CUDA_SECRET_TOKEN": "nope",  # under an allowed prefix, but named like a secret
    "AWS_SECRET_ACCESS_KEY": "aws",
    "CELERY_BROKER_URL": "redis://:pw@redis:6379/1",
    "EMAIL_HOST_PASSWORD": "mail-pw",
}
KNOBS = {
    "JOB_THREADS": "3",
    "OMP_NUM_THREADS": "3",
    "LLAMA_THREADS": "2",
    "LLAMA_CPU_VARIANT": "haswell",
    "OPENBLAS_CORETYPE": "ARMV8",
    "LLAMA_CPP_CONVERTER_DIR": "/opt/llama.cpp",
    "HF_HOME": "/models/huggingface",
    "CUDA_VISIBLE_DEVICES": "1",
    "LC_ALL": "C.UTF-8",
}
_DUMP_ENV = "import json, os; print('CHATSITE_RESULT ' + json.dumps(dict(os.environ)))"


def _fake_python(folder: Path, body: str) -> Path:
    """A stand-in for an environment's python: a shell script that ignores the step's arguments."""
    script = folder / "fake-python"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return script


def _assert_contained(env: dict[str, str]) -> None:
    leaked = sorted(set(SECRETS) & set(env))
    assert not leaked, f"the child saw the worker's {leaked}"
    for name, value in KNOBS.items():
        assert env.get(name) == value, name
    assert env["HF_HUB_OFFLINE"] == "1" and env["PATH"] == os.environ["PATH"]
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(Path(runner.__file__).resolve().parents[2])


def test_a_step_sees_no_secret_of_the_worker(
    monkeypatch: pytest.MonkeyPatch, settings: Any, tmp_path: Path, db: Any
) -> None:
    for name, value in {**SECRETS, **KNOBS}.items():
        monkeypatch.setenv(name, value)
    settings.JOB_PYTHONS = {"main": str(_fake_python(tmp_path, f'exec {sys.executable} -c "{_DUMP_ENV}"'))}
    ctx = runner.JobContext(Job.objects.create(kind="evaluate"), None)
    try:
        env = ctx.step("evaluate", {}, span=(0, 100), extra_env={"CHATSITE_BENCH_TOKEN": "per-step"})
    finally:
        ctx.close()
    _assert_contained(env)
    assert env["CHATSITE_BENCH_TOKEN"] == "per-step"  # a step's own secret, passed explicitly


def test_a_conversion_child_sees_no_secret_of_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {**SECRETS, **KNOBS}.items():
        monkeypatch.setenv(name, value)
    out = run_command("dump", [sys.executable, "-c", _DUMP_ENV], timeout=60)
    _assert_contained(json.loads(out.strip().split("CHATSITE_RESULT ", 1)[1]))


def test_the_allowlist_is_one_function_of_the_parent_environment() -> None:
    from inference.children import child_env

    env = child_env(parent={**SECRETS, **KNOBS, "PATH": "/bin", "PYTHONPATH": "/extra"}, extra={"X_STEP": "1"})
    assert not set(SECRETS) & set(env)
    assert env["PYTHONPATH"].endswith(os.pathsep + "/extra") and env["X_STEP"] == "1" and env["PATH"] == "/bin"


def test_a_step_is_started_without_preexec_fn_in_its_own_session(
    monkeypatch: pytest.MonkeyPatch, settings: Any, tmp_path: Path, db: Any
) -> None:
    seen: list[dict[str, Any]] = []
    real_popen = subprocess.Popen

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs)
        return real_popen(*args, **kwargs)

    monkeypatch.setattr(children.subprocess, "Popen", spy)  # the one place children start
    settings.JOB_PYTHONS = {"main": str(_fake_python(tmp_path, "echo 'CHATSITE_RESULT {}'"))}
    ctx = runner.JobContext(Job.objects.create(kind="evaluate"), None)
    try:
        assert ctx.step("evaluate", {}, span=(0, 100)) == {}
    finally:
        ctx.close()
    (kwargs,) = seen
    assert kwargs.get("preexec_fn") is None and kwargs["start_new_session"] is True


_WORKER = """
import sys, django
django.setup()
from pipeline.jobs.runner import JobContext
from inference.models import Job
ctx = JobContext(Job(pk=987654, kind="evaluate"), None)
ctx.step("evaluate", {}, span=(0, 100))
"""


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_a_step_dies_when_its_worker_is_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "step.pid"
    fake = _fake_python(tmp_path, f"echo $$ > {pid_file}\nexec sleep 120")
    env = {
        **os.environ, "DJANGO_SETTINGS_MODULE": "chatsite.settings", "CHATSITE_DATA_DIR": str(tmp_path / "data"),
        "CHATSITE_ARTIFACT_ROOT": str(tmp_path / "artifacts"), "JOB_PYTHON": str(fake),
    }  # fmt: skip
    worker = subprocess.Popen([sys.executable, "-c", _WORKER], env=env, cwd=str(Path(runner.__file__).parents[2]))
    try:
        deadline = time.monotonic() + 60
        while not (pid_file.is_file() and pid_file.read_text().strip()):
            assert worker.poll() is None, "the worker ended before its step started"
            assert time.monotonic() < deadline, "the step never started"
            time.sleep(0.05)
        step = int(pid_file.read_text())
        assert _alive(step)
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        deadline = time.monotonic() + 10
        while _alive(step):
            assert time.monotonic() < deadline, "the step outlived its worker"
            time.sleep(0.05)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
