"""A long chat opens at its newest message, with every message on the page."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.ui.site import open_session, seed_session
from tools.launch import Platform

pytestmark = pytest.mark.slow


def test_a_long_chat_opens_at_the_newest_message(page: Page, platform: Platform) -> None:
    messages = []
    for i in range(60):
        messages += [("user", f"Question number {i}?"), ("assistant", f"Answer number {i}.\n\n" + "Some text. " * 40)]
    session_id = seed_session(platform, "alice", "A long chat", messages)
    open_session(page, platform, session_id)
    articles = page.locator("#messages article")
    expect(articles).to_have_count(120)
    expect(articles.last).to_contain_text("Answer number 59.")
    expect(articles.last).to_be_in_viewport()
    expect(articles.first).not_to_be_in_viewport()

    page.locator("#thread").evaluate("(el) => { el.scrollTop = 0; }")
    expect(articles.first).to_be_in_viewport()
    expect(articles.first).to_contain_text("Question number 0?")
