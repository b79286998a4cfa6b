"""Light and dark themes, and the page at a phone's width."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.ui.site import open_session, seed_session
from tools.launch import Platform

pytestmark = pytest.mark.slow


def test_the_theme_follows_the_system_and_the_toggle_is_remembered(page: Page, platform: Platform) -> None:
    page.emulate_media(color_scheme="dark")
    page.goto(f"{platform.http}/")
    html = page.locator("html")
    expect(html).to_have_attribute("data-theme", "dark")
    page.get_by_role("button", name="Switch to light theme").click()
    expect(html).to_have_attribute("data-theme", "light")
    page.reload()
    expect(html).to_have_attribute("data-theme", "light")
    page.get_by_role("button", name="Switch to dark theme").click()
    expect(html).to_have_attribute("data-theme", "dark")


def test_the_chat_fits_a_phone_and_the_list_opens_as_a_drawer(
    browser: Browser, platform: Platform, alice_state: Any
) -> None:
    session_id = seed_session(platform, "alice", "On the phone", [("user", "hi"), ("assistant", "Hello! " * 80)])
    context = browser.new_context(
        storage_state=alice_state, viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True
    )
    page = context.new_page()
    open_session(page, platform, session_id)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    expect(page.get_by_label("Message", exact=True)).to_be_visible()
    expect(page.locator("#sidebar")).not_to_be_in_viewport()

    page.get_by_role("button", name="Show the chat list").click()
    expect(page.locator("#sidebar")).to_be_in_viewport()
    expect(page.get_by_label("Search chats by title or message")).to_be_focused()
    page.keyboard.press("Escape")
    expect(page.locator("#sidebar")).not_to_be_in_viewport()
    context.close()
