"""Each reply shows its state in words, and a failed one its error."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.ui.site import open_session, seed_session
from tools.launch import Platform

pytestmark = pytest.mark.slow


def test_finished_replies_say_done_stopped_failed_or_interrupted(page: Page, platform: Platform) -> None:
    session_id = seed_session(
        platform,
        "alice",
        "States",
        [
            ("user", "one"),
            ("assistant", "All of it.", "complete", ""),
            ("user", "two"),
            ("assistant", "Half of", "cancelled", ""),
            ("user", "three"),
            ("assistant", "", "failed", "The model file is missing: put it back or pick another model."),
            ("user", "four"),
            ("assistant", "Cut short", "interrupted", ""),
        ],
    )
    open_session(page, platform, session_id)
    replies = page.locator("article.msg-assistant")
    expect(replies.locator(".status")).to_have_text(["done", "stopped", "failed", "interrupted"])
    expect(replies.nth(1).locator(".msg-body")).to_have_text("Half of")
    expect(replies.nth(2).get_by_role("alert")).to_have_text(
        "The model file is missing: put it back or pick another model."
    )
    expect(replies.nth(3)).to_contain_text("interrupted (its worker stopped); the text so far is kept")
    # Only the last reply offers to regenerate, and nothing is running, so nothing offers to stop.
    expect(page.get_by_role("button", name="Regenerate this reply")).to_have_count(1)
    expect(page.get_by_role("button", name="Stop", exact=True)).to_be_hidden()
