"""Regenerating the last reply, and editing a message (which replaces what came after it)."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.ui.helpers import ask, last_reply, replies, session_id_of, stored, wait_final
from tools.launch import Platform

pytestmark = pytest.mark.slow


def chat_with_one_answer(page: Page, platform: Platform, question: str) -> int:
    page.goto(f"{platform.http}/")
    page.locator(".agent-card", has_text="Assistant").click()
    page.wait_for_selector("body[data-ready='1']")
    assert wait_final(ask(page, question)) == "complete"
    return session_id_of(page)


def test_regenerate_replaces_the_last_reply(page: Page, platform: Platform) -> None:
    session_id = chat_with_one_answer(page, platform, "Name a color.")
    first_id = stored(platform, session_id)[1]["id"]

    last_reply(page).hover()
    page.get_by_role("button", name="Regenerate this reply").click()
    expect(page.locator(f"article[data-id='{first_id}']")).to_have_count(0)
    expect(replies(page)).to_have_count(1)
    assert wait_final(last_reply(page)) == "complete"

    rows = stored(platform, session_id)
    assert [r["role"] for r in rows] == ["user", "assistant"] and rows[1]["id"] != first_id
    assert last_reply(page).get_attribute("data-id") == str(rows[1]["id"])


def test_editing_a_message_replaces_the_conversation_after_it(page: Page, platform: Platform) -> None:
    session_id = chat_with_one_answer(page, platform, "Name a fruit.")
    assert wait_final(ask(page, "Name another one.")) == "complete"
    assert len(stored(platform, session_id)) == 4

    first = page.locator("article.msg-user").first
    first.hover()
    first.get_by_role("button", name="Edit and resend").click()
    editor = first.get_by_label("Edit your message")
    editor.fill("Name a vegetable.")
    first.get_by_role("button", name="Save & send").click()

    expect(page.locator("article.msg-user")).to_have_count(1)
    expect(page.locator("article.msg-user .msg-body")).to_have_text("Name a vegetable.")
    expect(replies(page)).to_have_count(1)
    assert wait_final(last_reply(page)) == "complete"
    rows = stored(platform, session_id)
    assert [(r["role"], r["status"]) for r in rows] == [("user", "complete"), ("assistant", "complete")]
    assert rows[0]["content"] == "Name a vegetable."
