"""Exporting a chat as Markdown and JSON; another user's chat is not found."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from playwright.sync_api import Browser, Page

from tests.ui.site import log_in, seed_session
from tools.launch import Platform

pytestmark = pytest.mark.slow

REPLY = "Here is a table:\n\n| fruit | color |\n| --- | --- |\n| kiwi | green |\n"


def download(page: Page, link_name: str) -> tuple[str, str]:
    with page.expect_download() as info:
        page.get_by_role("link", name=link_name).click()
    file = info.value
    return file.suggested_filename, open(file.path(), encoding="utf-8").read()


def test_a_chat_exports_as_markdown_and_as_json(page: Page, platform: Platform) -> None:
    title = f"Fruit colors {uuid.uuid4().hex[:6]}"
    session_id = seed_session(platform, "alice", title, [("user", "Which fruit is green?"), ("assistant", REPLY)])
    page.goto(f"{platform.http}/s/{session_id}/")
    page.wait_for_selector("body[data-ready='1']")

    name, markdown = download(page, "Markdown")
    assert name.endswith(f"-{session_id}.md")
    assert markdown.startswith(f"# {title}\n")
    assert "## You · " in markdown and "Which fruit is green?" in markdown
    assert "## Assistant · llama_cpp · " in markdown and "| kiwi | green |" in markdown

    name, raw = download(page, "JSON")
    assert name.endswith(f"-{session_id}.json")
    data: dict[str, Any] = json.loads(raw)
    assert data["session"]["id"] == session_id and data["session"]["title"] == title
    assert [(m["role"], m["content"]) for m in data["messages"]] == [
        ("user", "Which fruit is green?"),
        ("assistant", REPLY),
    ]


def test_another_users_chat_page_and_exports_are_not_found(browser: Browser, platform: Platform) -> None:
    session_id = seed_session(platform, "alice", "Alice's secrets", [("user", "my secret")])
    context = browser.new_context()
    bob = log_in(context, platform, "bob")
    response = bob.goto(f"{platform.http}/s/{session_id}/")
    assert response is not None and response.status == 404
    assert "my secret" not in bob.content() and "Alice's secrets" not in bob.content()
    for suffix in ("export.md", "export.json"):
        answer = context.request.get(f"{platform.http}/s/{session_id}/{suffix}")
        assert answer.status == 404 and "my secret" not in answer.text()
    context.close()
