"""A dropped connection comes back by itself, and a message sent meanwhile is stored once."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.ui.helpers import last_reply, send, session_id_of, stored, wait_final
from tools.launch import Platform

pytestmark = pytest.mark.slow


def test_the_page_reconnects_after_the_server_restarts_and_sends_what_was_typed(page: Page, platform: Platform) -> None:
    page.goto(f"{platform.http}/")
    page.locator(".agent-card", has_text="Assistant").click()
    page.wait_for_selector("body[data-ready='1']")
    state = page.locator("#conn-state")
    expect(state).to_have_text("")

    platform.kill("daphne")
    expect(state).to_contain_text("Reconnecting", timeout=10_000)
    send(page, "Are you back?")
    expect(page.locator("article.msg-user")).to_have_attribute("data-status", "sending")

    platform.start_daphne()
    expect(state).to_have_text("", timeout=30_000)
    assert wait_final(last_reply(page)) == "complete"
    rows = stored(platform, session_id_of(page))
    assert [(r["role"], r["content"]) for r in rows][:1] == [("user", "Are you back?")]
    assert len(rows) == 2, "the message is stored once, however often it was sent"
