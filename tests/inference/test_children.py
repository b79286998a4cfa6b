"""The one child-process helper: a child runs in its own process group that a stop ends whole,
grandchildren included; it dies when the process that started it dies; the lines it prints are
parsed in one place, where a malformed one is logged and reading goes on."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from inference import children
from inference.children import (
    Progress,
    error_line,
    free_port,
    group_stop,
    line_parse,
    lines_follow,
    progress_line,
    result_line,
    spawn,
)

PROJECT = Path(children.__file__).resolve().parents[1]


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent to reap it counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _gone(pid: int, within: float = 10) -> bool:
    deadline = time.monotonic() + within
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _read_pid(path: Path, within: float = 20) -> int:
    deadline = time.monotonic() + within
    while not (path.is_file() and path.read_text().strip()):
        assert time.monotonic() < deadline, f"nothing wrote {path.name}"
        time.sleep(0.05)
    return int(path.read_text())


# A child that starts a grandchild in its group, then waits. The grandchild writes its pid once it
# is ready: after it has set SIGTERM aside, where it ignores it.
GRANDCHILD = """
import os, signal, sys, time
if sys.argv[2] == "ignore-term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
open(sys.argv[1], "w").write(str(os.getpid()))
time.sleep(120)
"""
PARENT_OF_ONE = f"""
import subprocess, sys, time
subprocess.Popen([sys.executable, "-c", {GRANDCHILD!r}, *sys.argv[1:]])
time.sleep(120)
"""

needs_linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")


def test_a_child_runs_in_its_own_process_group(tmp_path: Path) -> None:
    proc = spawn(["sleep", "60"])
    try:
        assert os.getpgid(proc.pid) == proc.pid != os.getpgid(0)
    finally:
        group_stop(proc, grace=2)


@pytest.mark.parametrize("grandchild", ["polite", "ignore-term"])
def test_stopping_a_child_stops_its_grandchildren(tmp_path: Path, grandchild: str) -> None:
    pid_file = tmp_path / "grandchild.pid"
    proc = spawn([sys.executable, "-c", PARENT_OF_ONE, str(pid_file), grandchild])
    grandchild_pid = _read_pid(pid_file)
    assert _alive(grandchild_pid)
    started = time.monotonic()
    status = group_stop(proc, grace=1.0)
    assert status == -signal.SIGTERM  # the child itself ends on SIGTERM
    assert _gone(grandchild_pid, within=5), "a grandchild outlived the stop"
    # The polite group ends at once; one that ignores SIGTERM is killed after the grace period.
    took = time.monotonic() - started
    assert took < 1.0 if grandchild == "polite" else 1.0 <= took < 5


def test_a_stop_that_leaves_the_reaping_to_another_thread_does_not_reap(tmp_path: Path) -> None:
    proc = spawn([sys.executable, "-c", "import time; time.sleep(60)"], stdout=subprocess.PIPE)
    assert group_stop(proc, grace=2, reap=False) is None
    status, peak_rss = children.wait_with_usage(proc)
    assert status == proc.returncode == -signal.SIGTERM
    assert peak_rss > 1_000_000  # a Python interpreter's pages, in bytes


# Starts a child as the platform's callers do, prints the child's pid, then waits to be killed.
STARTER = """
import sys, threading, time
from inference.children import spawn
how = sys.argv[1]
if how == "lasting":  # from a thread that ends at once: the child must live on with the process
    started = []
    thread = threading.Thread(target=lambda: started.append(spawn(["sleep", "120"], lasting=True)))
    thread.start()
    thread.join()
    proc = started[0]
else:
    proc = spawn(["sleep", "120"])
print(proc.pid, flush=True)
time.sleep(0.5)
print("alive" if proc.poll() is None else "dead", flush=True)
time.sleep(120)
"""


@needs_linux
@pytest.mark.parametrize("how", ["caller", "lasting"])
def test_a_child_dies_when_its_parent_is_killed(how: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    parent = subprocess.Popen([sys.executable, "-c", STARTER, how], stdout=subprocess.PIPE, env=env)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert parent.stdout.readline().strip() == b"alive"  # the starting thread's end did not kill it
        assert _alive(child)
        parent.send_signal(signal.SIGKILL)  # no atexit, no handler: the kernel's death signal does it
        parent.wait(10)
        assert _gone(child), "the child outlived its parent"
    finally:
        parent.kill()
        parent.wait()


@needs_linux
def test_a_child_that_cannot_be_started_says_why() -> None:
    proc = spawn(["/no/such/program"], stderr=subprocess.PIPE)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 1 and b"error: could not start /no/such/program" in err  # the launcher's words


# What the child reads back: its pid and its parent-death signal (PR_GET_PDEATHSIG is 2).
READ_DEATH_SIGNAL = (
    "import ctypes, os; sig = ctypes.c_int(); ctypes.CDLL(None).prctl(2, ctypes.byref(sig)); "
    "print(os.getpid(), sig.value)"
)


@needs_linux
@pytest.mark.parametrize("death_signal", [signal.SIGKILL, signal.SIGTERM])
def test_the_launcher_arms_the_death_signal_and_becomes_the_command(death_signal: int) -> None:
    proc = spawn([sys.executable, "-c", READ_DEATH_SIGNAL], stdout=subprocess.PIPE, death_signal=death_signal)
    out, _ = proc.communicate(timeout=20)
    pid, armed = out.split()
    assert int(pid) == proc.pid  # exec'd in place: no second process between parent and command
    assert int(armed) == death_signal


def test_free_port_is_a_port_nothing_listens_on() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))  # free: binding it works


# --- the line protocol ------------------------------------------------------------------------


def test_progress_and_result_lines_are_parsed_back() -> None:
    progress = line_parse(progress_line(42.5, "training", metrics={"step": 3, "loss": 1.25}))
    assert progress.kind == "progress"
    assert progress.progress == Progress(percent=42.5, stage="training", metrics={"step": 3, "loss": 1.25})
    assert line_parse(progress_line(250)).progress == Progress(percent=100.0, stage="")  # clamped
    result = line_parse(result_line({"path": "/out", "files": 3}))
    assert result.kind == "result" and result.result == {"path": "/out", "files": 3}
    assert line_parse("Loading weights...").kind == "log"


def test_a_child_is_followed_to_its_end(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        print({progress_line(10, "reading")!r})
        print("a line for the log")
        print("50%|#####     | 5/10 [00:01<00:01, 4.0it/s]")
        print({progress_line(90, "writing", metrics={"loss": 0.5})!r})
        print({error_line("the model folder has no config.json")!r}, file=sys.stderr)
        print({result_line({"ok": True})!r})
        """
    )
    proc = spawn([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    progress: list[Progress] = []
    logged: list[str] = []
    report = lines_follow(proc.stdout, on_progress=progress.append, on_log=logged.append)
    assert proc.wait(10) == 0
    assert [(p.percent, p.stage) for p in progress] == [(10, "reading"), (90, "writing")]
    assert progress[1].metrics == {"loss": 0.5}
    assert report.result == {"ok": True}
    assert "a line for the log" in logged and not any("5/10" in line for line in logged)  # no progress bars
    assert report.failure_reason() == "the model folder has no config.json"


@pytest.mark.parametrize(
    "line",
    [
        "CHATSITE_PROGRESS {not json",
        'CHATSITE_PROGRESS {"progress": "most"}',
        "CHATSITE_PROGRESS [1, 2]",
        "CHATSITE_RESULT {truncated",
        "CHATSITE_RESULT 42",
    ],
)
def test_a_malformed_protocol_line_is_logged_not_fatal(line: str, caplog: pytest.LogCaptureFixture) -> None:
    logged: list[str] = []
    with caplog.at_level(logging.WARNING, logger="inference.children"):
        report = lines_follow([line.encode(), result_line({"done": 1}).encode() + b"\n"], on_log=logged.append)
    assert logged == [line]  # into the child's log, as it was printed
    assert report.result == {"done": 1}  # and the reading went on
    assert "malformed protocol line" in caplog.text


def test_a_failure_without_an_error_line_is_explained_by_the_last_line() -> None:
    report = lines_follow(["Traceback (most recent call last):", "ValueError: bad shape", ""])
    assert report.result is None and report.failure_reason() == "ValueError: bad shape"
    assert lines_follow([]).failure_reason() == "no output"
