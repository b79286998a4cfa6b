"""Start a real embedded platform and a headless Chromium: shared by the browser tests, the
benchmark and the screenshot program."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, BrowserContext, Page, Playwright

from tests.platform_setup import prepare, static_root
from tests.platform_shell import shell_run
from tools.launch import Platform, free_port, platform_env

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
USERS = ("alice", "bob")


# A second agent, so the picker has a choice; in the embedded default its node changes nothing.
SECOND_AGENT = """
from agents.models import Agent
bundled = Agent.objects.get(slug="assistant")
Agent.objects.update_or_create(slug="pirate", defaults=dict(
    name="Pirate", description="Answers every question like an old sea captain.", avatar_emoji="🏴‍☠️",
    system_prompt="You are a pirate captain. Answer in pirate speak.", backend=bundled.backend,
    model=bundled.model, node="edge-01", max_tokens=96))
"""


def password(user: str) -> str:
    return f"{user}-password-1"  # what tools.launch.prepare sets


@contextmanager
def running_platform(data: Path, **env: str) -> Iterator[Platform]:
    """daphne on a loopback port, SQLite in ``data``, replies from the bundled model in-process;
    the static files (which whitenoise serves from STATIC_ROOT) collected once per run."""
    environ = platform_env(data_dir=data, database_url=None, redis_url=None, **{"STATIC_ROOT": static_root(), **env})
    logs = data / "logs"
    logs.mkdir(exist_ok=True)
    platform = Platform(env=environ, port=free_port(), log_dir=logs)
    platform.tokens = prepare(environ, USERS, code=SECOND_AGENT, static=True)
    platform.start_daphne()
    try:
        yield platform
    finally:
        platform.stop_all()


def launch(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


def log_in(context: BrowserContext, platform: Platform, user: str) -> Page:
    page = context.new_page()
    page.goto(f"{platform.http}/login/")
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(password(user))
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{platform.http}/")
    return page


def shell(platform: Platform, code: str) -> Any:
    """Run Python against the platform's database (as ``manage.py shell -c``, in the platform's
    lasting shell process: tests.platform_shell); return the JSON it prints last."""
    out = shell_run(platform, code)
    return json.loads(out.strip().splitlines()[-1])


SEED = """
import json
from django.contrib.auth.models import User
from agents.models import Agent
from sessions_app.models import Message, Session
owner = User.objects.get(username=OWNER)
agent = Agent.objects.get(slug="assistant")
session = Session.objects.create(owner=owner, agent=agent, title=TITLE)
session.agents.add(agent)
rows = []
for role, content, *rest in MESSAGES:
    status, error = (rest + ["complete", ""])[:2]
    rows.append(Message(session=session, role=role, content=content,
                        agent=agent if role == "assistant" else None,
                        status=status, error=error, backend=agent.backend,
                        completion_tokens=len(content.split()) if role == "assistant" else None))
Message.objects.bulk_create(rows)
print(json.dumps(session.pk))
"""


def seed_session(platform: Platform, owner: str, title: str, messages: list[tuple[str, ...]]) -> int:
    """A session stored straight in the database; no reply is generated. Each message is
    ``(role, content)`` (complete) or ``(role, content, status, error)``."""
    code = f"OWNER = {owner!r}\nTITLE = {title!r}\nMESSAGES = {messages!r}\n" + SEED
    return int(shell(platform, code))


def open_session(page: Page, platform: Platform, session_id: int) -> None:
    """Open a chat and wait until the server's snapshot is on screen."""
    page.goto(f"{platform.http}/s/{session_id}/")
    page.wait_for_selector("body[data-ready='1']")
