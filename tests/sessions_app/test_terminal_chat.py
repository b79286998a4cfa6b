"""The terminal chat, ``manage.py chat``, on the bundled model in the embedded default.

Each test drives the command as a person would: lines on its stdin, Ctrl+C as a real SIGINT, and
it reads what the command printed and what the database kept.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
WAIT = 180.0  # seconds: the model loads in about one, but the machine may be busy
STATS = re.compile(r"\[ \d+ tokens \| TTFT \d+ ms \| [\d.]+ tokens/s \]")
PROMPT = "you> "
AGENT_PROMPT = "assistant> "


class Chat:
    """``manage.py chat`` in a subprocess; its output is collected as it comes, char by char."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "chat", "--agent", "assistant", "--no-color", *args],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self._out = bytearray()
        self._err = bytearray()
        self._changed = threading.Condition()
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [
            threading.Thread(target=self._drain, args=(self.proc.stdout, self._out), daemon=True),
            threading.Thread(target=self._drain, args=(self.proc.stderr, self._err), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _drain(self, stream: IO[bytes], into: bytearray) -> None:
        fd = stream.fileno()
        while chunk := os.read(fd, 4096):
            with self._changed:
                into.extend(chunk)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def output(self) -> str:
        with self._changed:
            return self._out.decode("utf-8", "replace")

    @property
    def errors(self) -> str:
        with self._changed:
            return self._err.decode("utf-8", "replace")

    def wait_until(self, what: str, condition: Callable[[str], bool], timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not condition(self._out.decode("utf-8", "replace")):
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._readers[0].is_alive()):
                    raise AssertionError(f"no {what}; output:\n{self.output}\nstderr:\n{self.errors}")
                self._changed.wait(min(left, 1.0))

    def prompts_shown(self, count: int) -> None:
        """Wait until the ``count``-th prompt is on screen, the command reading its next line."""
        self.wait_until(f"prompt #{count}", lambda out: out.count(PROMPT) >= count and out.endswith(PROMPT))

    def type(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode("utf-8"))
        self.proc.stdin.flush()

    def ctrl_c(self) -> None:
        self.proc.send_signal(signal.SIGINT)

    def exit_code(self, timeout: float = WAIT) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running; output:\n{self.output}\nstderr:\n{self.errors}") from None
        for reader in self._readers:
            reader.join(10)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


@dataclass
class Site:
    env: dict[str, str]
    db: Path

    def query(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.db) as conn:
            return conn.execute(sql, params).fetchall()

    def sessions_after(self, session_id: int) -> list[int]:
        rows = self.query("SELECT id FROM sessions_app_session WHERE id > ? ORDER BY id", session_id)
        return [int(row[0]) for row in rows]

    def last_session_id(self) -> int:
        return int(self.query("SELECT coalesce(max(id), 0) FROM sessions_app_session")[0][0])

    def messages_of(self, session_id: int) -> list[tuple[Any, ...]]:
        return self.query(
            "SELECT role, status, content FROM sessions_app_message WHERE session_id = ? ORDER BY id",
            session_id,
        )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    """A fresh embedded-default site: its own SQLite file, migrated and bootstrapped."""
    data = tmp_path_factory.mktemp("terminal-chat")
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL", "NO_COLOR")}
    env.update(
        CHATSITE_DATA_DIR=str(data),
        DJANGO_SETTINGS_MODULE="chatsite.settings",
        PYTHONUNBUFFERED="1",
    )
    for args in (["migrate", "--noinput"], ["bootstrap"]):
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
    return Site(env=env, db=data / "db.sqlite3")


@pytest.fixture
def start_chat(site: Site) -> Iterator[Callable[..., Chat]]:
    chats: list[Chat] = []

    def start(*args: str) -> Chat:
        chats.append(Chat(site.env, *args))
        return chats[-1]

    yield start
    for chat in chats:
        chat.kill()


def test_a_question_gets_a_streamed_answer_that_is_saved(start_chat: Callable[..., Chat], site: Site) -> None:
    before = site.last_session_id()
    chat = start_chat()
    chat.type("What is the capital of France?\nexit\n")

    assert chat.exit_code() == 0, chat.errors
    assert "Traceback" not in chat.errors
    # llama.cpp's own lines ("load_backend: loaded CPU backend from ...") stay off the terminal.
    assert "load_backend" not in chat.errors and "load_backend" not in chat.output, chat.errors
    out = chat.output
    assert STATS.search(out), out

    (session,) = site.sessions_after(before)
    question, answer = site.messages_of(session)
    assert question == ("user", "complete", "What is the capital of France?")
    role, status, content = answer
    assert (role, status) == ("assistant", "complete")
    assert isinstance(content, str) and content.strip()
    assert f"{AGENT_PROMPT}{content}\n" in out  # what was printed is what was saved


def test_ctrl_c_stops_the_reply_and_keeps_its_text(start_chat: Callable[..., Chat], site: Site) -> None:
    before = site.last_session_id()
    chat = start_chat()
    chat.type("Write a very long story about a dragon who learns to bake bread, in many chapters.\n")
    chat.wait_until(
        "40 characters of the reply",
        lambda out: AGENT_PROMPT in out and len(out.split(AGENT_PROMPT, 1)[1]) >= 40,
    )
    chat.ctrl_c()
    chat.type("exit\n")

    assert chat.exit_code() == 0, chat.errors
    assert "Traceback" not in chat.errors
    out = chat.output
    assert "[stopped]" in out
    printed = out.split(AGENT_PROMPT, 1)[1]
    (session,) = site.sessions_after(before)
    _, (role, status, content) = site.messages_of(session)
    assert (role, status) == ("assistant", "cancelled")
    assert isinstance(content, str) and content.strip()
    assert printed.startswith(content)
    assert printed.index("[stopped]") >= len(content)


def test_ctrl_c_at_the_prompt_only_prints_a_hint(start_chat: Callable[..., Chat]) -> None:
    chat = start_chat()
    chat.prompts_shown(1)
    chat.ctrl_c()
    chat.prompts_shown(2)
    assert "type exit" in chat.output
    # Again after a reply has ended: the moment a previous version died of SIGINT.
    chat.type("Say hi.\n")
    chat.prompts_shown(3)
    chat.ctrl_c()
    chat.prompts_shown(4)
    chat.type("exit\n")

    assert chat.exit_code() == 0, chat.errors
    assert "Traceback" not in chat.errors and "KeyboardInterrupt" not in chat.errors
    assert STATS.search(chat.output)


def test_clear_starts_a_second_session(start_chat: Callable[..., Chat], site: Site) -> None:
    before = site.last_session_id()
    chat = start_chat()
    chat.type("Say hello.\nclear\nSay goodbye.\nexit\n")

    assert chat.exit_code() == 0, chat.errors
    assert "New session" in chat.output
    sessions = site.sessions_after(before)
    assert len(sessions) == 2
    first, second = (site.messages_of(s) for s in sessions)
    assert [m[:2] for m in first] == [("user", "complete"), ("assistant", "complete")]
    assert [m[:2] for m in second] == [("user", "complete"), ("assistant", "complete")]
    assert first[0][2] == "Say hello." and second[0][2] == "Say goodbye."
