"""Stopping a long reply, and reloading the page while one streams."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.ui.helpers import ask, copied, last_reply, session_id_of, shown_seq, stored, wait_final, wait_seq
from tools.launch import Platform

pytestmark = pytest.mark.slow

LONG = "Write a very long story about a dragon who learns to bake bread. Use many paragraphs."


def new_chat(page: Page, platform: Platform) -> None:
    page.goto(f"{platform.http}/")
    page.locator(".agent-card", has_text="Assistant").click()
    page.wait_for_selector("body[data-ready='1']")


def test_stop_ends_a_long_reply_and_keeps_its_text(page: Page, platform: Platform) -> None:
    new_chat(page, platform)
    reply = ask(page, LONG)
    wait_seq(reply, 8)
    stop = page.get_by_role("button", name="Stop", exact=True)
    expect(stop).to_be_visible()
    stop.click()

    assert wait_final(reply, timeout=30_000) == "cancelled"
    expect(reply.locator(".status")).to_have_text("stopped")
    expect(stop).to_be_hidden()
    row = stored(platform, session_id_of(page))[-1]
    assert row["status"] == "cancelled" and len(row["content"]) > 10
    assert copied(page, reply) == row["content"]


def test_a_reload_mid_reply_shows_the_text_so_far_and_streams_on(page: Page, platform: Platform) -> None:
    new_chat(page, platform)
    wait_seq(ask(page, LONG), 5)
    page.reload()
    page.wait_for_selector("body[data-ready='1']")

    reply = last_reply(page)
    seq_after_reload = shown_seq(reply)
    assert seq_after_reload >= 5, "the snapshot brings the text streamed before the reload"
    assert reply.locator(".msg-body").inner_text().strip()
    if reply.get_attribute("data-status") == "streaming":
        wait_seq(reply, seq_after_reload + 3)  # and the stream goes on
    assert wait_final(reply) == "complete"

    row = stored(platform, session_id_of(page))[-1]
    assert copied(page, reply) == row["content"], "nothing lost or doubled across the reload"
    assert shown_seq(reply) == row["seq"]
