"""The list of chats: newest first, search by title and content, rename, archive, delete."""

from __future__ import annotations

import uuid

import pytest
from playwright.sync_api import Page, expect

from tests.integration.chat_client import api
from tests.ui.site import seed_session
from tools.launch import Platform

pytestmark = pytest.mark.slow


def titles(page: Page) -> list[str]:
    return [t.strip() for t in page.locator("#session-list .session-title").all_inner_texts()]


def item(page: Page, title: str):  # type: ignore[no-untyped-def]
    return page.locator("#session-list li", has_text=title)


def test_search_finds_chats_by_title_and_by_message_content(page: Page, platform: Platform) -> None:
    tag = uuid.uuid4().hex[:6]
    seed_session(platform, "alice", f"Garden plans {tag}", [("user", "When do I plant tomatoes?")])
    fruit = [("user", "Tell me about fruit"), ("assistant", f"The kumquat{tag} is small.")]
    seed_session(platform, "alice", f"Fruit talk {tag}", fruit)
    seed_session(platform, "bob", f"Bob's kumquat{tag}", [("user", f"kumquat{tag}")])

    page.goto(f"{platform.http}/")
    assert titles(page)[:2] == [f"Fruit talk {tag}", f"Garden plans {tag}"], "newest first"

    search = page.get_by_label("Search chats by title or message")
    listed = page.locator("#session-list .session-title")
    search.fill(f"kumquat{tag}")
    expect(listed).to_have_text([f"Fruit talk {tag}"])  # by a reply's text; bob's chat is not alice's

    search.fill(f"garden PLANS {tag}")
    expect(listed).to_have_text([f"Garden plans {tag}"])

    search.fill(f"nothing-like-this-{tag}")
    expect(page.locator("#session-empty")).to_have_text("No chat matches.")


def test_rename_archive_and_delete_with_confirmation(page: Page, platform: Platform) -> None:
    tag = uuid.uuid4().hex[:6]
    session_id = seed_session(platform, "alice", f"Old name {tag}", [("user", "hello")])
    token = platform.tokens["alice"]
    page.goto(f"{platform.http}/")

    row = item(page, f"Old name {tag}")
    row.get_by_role("button", name=f"Actions for Old name {tag}").click()
    row.get_by_role("button", name="Rename").click()
    title = page.get_by_label("New title")
    title.fill(f"New name {tag}")
    title.press("Enter")
    expect(item(page, f"New name {tag}")).to_have_count(1)
    assert api(platform.http, token, "GET", f"/api/sessions/{session_id}/")[1]["title"] == f"New name {tag}"

    row = item(page, f"New name {tag}")
    row.get_by_role("button", name=f"Actions for New name {tag}").click()
    row.get_by_role("button", name="Archive").click()
    expect(item(page, f"New name {tag}")).to_have_count(0)
    page.get_by_role("button", name="Archived").click()
    expect(item(page, f"New name {tag}")).to_have_count(1)
    assert api(platform.http, token, "GET", f"/api/sessions/{session_id}/")[1]["archived"] is True

    row = item(page, f"New name {tag}")
    row.get_by_role("button", name=f"Actions for New name {tag}").click()
    row.get_by_role("button", name="Delete").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text(f"New name {tag}")
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    expect(item(page, f"New name {tag}")).to_have_count(1)
    assert api(platform.http, token, "GET", f"/api/sessions/{session_id}/")[0] == 200

    row.get_by_role("button", name=f"Actions for New name {tag}").click()
    row.get_by_role("button", name="Delete").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    expect(item(page, f"New name {tag}")).to_have_count(0)
    assert api(platform.http, token, "GET", f"/api/sessions/{session_id}/")[0] == 404


def test_deleting_the_open_chat_goes_back_to_the_picker(page: Page, platform: Platform) -> None:
    tag = uuid.uuid4().hex[:6]
    session_id = seed_session(platform, "alice", f"Doomed {tag}", [("user", "bye")])
    page.goto(f"{platform.http}/s/{session_id}/")
    page.wait_for_selector("body[data-ready='1']")
    row = item(page, f"Doomed {tag}")
    row.get_by_role("button", name=f"Actions for Doomed {tag}").click()
    row.get_by_role("button", name="Delete").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    expect(page).to_have_url(f"{platform.http}/")
    expect(page.get_by_role("heading", name="Who do you want to talk to?")).to_be_visible()
