"""Python run against a running platform's database, as ``manage.py shell -c`` runs it, in one
lasting process per platform instead of a new one per snippet.

The browser and integration tests seed and read rows this way many times a run (a staff user, a
benchmark job, a session), and each ``manage.py shell`` was a Django start-up. The process here
starts with the platform's environment on the first snippet, runs each snippet in fresh globals
with its printed output captured, closes its database connections after each (it holds no lock
and no connection between snippets, as a process that exited held none), and ends when the test
process does (its stdin closes).

    shell_run(platform, "from agents.models import Agent; print(Agent.objects.count())")  # "1\n"
"""

from __future__ import annotations

import atexit
import contextlib
import io
import json
import subprocess
import sys
import traceback

from tools.launch import ROOT, Platform

_shells: dict[tuple[str, str, str], subprocess.Popen[str]] = {}


def _started(platform: Platform) -> subprocess.Popen[str]:
    key = (str(platform.log_dir), platform.env.get("DATABASE_URL", ""), platform.env.get("CHATSITE_DATA_DIR", ""))
    proc = _shells.get(key)
    if proc is None or proc.poll() is not None:
        with open(platform.log_dir / "shell.log", "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tests.platform_shell"], cwd=ROOT, env=platform.env, text=True,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, start_new_session=True,
            )  # fmt: skip
        _shells[key] = proc
    return proc


def shell_run(platform: Platform, code: str) -> str:
    """What ``code`` printed; a RuntimeError with its traceback when it raised."""
    proc = _started(platform)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(json.dumps({"code": code}) + "\n")
    proc.stdin.flush()
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"the platform's shell exited (see {platform.log_dir / 'shell.log'})")
    answer = json.loads(line)
    if answer["error"]:
        raise RuntimeError(f"shell code failed:\n{answer['error'][-4000:]}")
    return str(answer["out"])


@atexit.register
def _stop_all() -> None:
    for proc in _shells.values():
        if proc.poll() is None:
            proc.terminate()


def _serve() -> None:
    """The shell process: one JSON request a line on stdin, one JSON answer a line on stdout."""
    import django

    django.setup()
    # Only after django.setup(): the test process imports this module with other settings.
    from django.db import connections

    answer_to = sys.stdout
    for line in sys.stdin:
        out, error = io.StringIO(), None
        try:
            with contextlib.redirect_stdout(out):
                exec(json.loads(line)["code"], {"__name__": "__main__"})
        except BaseException:  # SystemExit included: a snippet's exit() ends the snippet only
            error = traceback.format_exc()
        finally:
            connections.close_all()
        answer_to.write(json.dumps({"out": out.getvalue(), "error": error}) + "\n")
        answer_to.flush()


if __name__ == "__main__":
    _serve()
