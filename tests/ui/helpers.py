"""What the browser tests share: reading a reply as the user copies it, and the REST view of it."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import Locator, Page, expect

from tests.integration.chat_client import api
from tools.launch import Platform

FINAL = "complete, cancelled, failed, interrupted".split(", ")


def replies(page: Page) -> Locator:
    return page.locator("article.msg-assistant")


def last_reply(page: Page) -> Locator:
    return replies(page).last


def wait_final(reply: Locator, timeout: float = 180_000) -> str:
    """Wait until the reply has ended; return its status."""
    reply.page.wait_for_function(
        "(el) => ['complete', 'cancelled', 'failed', 'interrupted'].includes(el.dataset.status)",
        arg=reply.element_handle(),
        timeout=timeout,
    )
    return str(reply.get_attribute("data-status"))


def shown_seq(reply: Locator) -> int:
    """The seq of the last delta the page has on screen for this reply."""
    return int(reply.locator(".msg-body").get_attribute("data-seq") or 0)


def wait_seq(reply: Locator, at_least: int, timeout: float = 120_000) -> None:
    reply.page.wait_for_function(
        "([el, n]) => Number(el.querySelector('.msg-body').dataset.seq || 0) >= n",
        arg=[reply.element_handle(), at_least],
        timeout=timeout,
    )


def copied(page: Page, message: Locator) -> str:
    """Press the message's copy button and read the clipboard, as a user pasting it would."""
    page.evaluate("navigator.clipboard.writeText('')")
    message.hover()
    message.get_by_role("button", name="Copy message").click()
    page.wait_for_function("async () => (await navigator.clipboard.readText()) !== ''", timeout=5_000)
    return str(page.evaluate("navigator.clipboard.readText()"))


def stored(platform: Platform, session_id: int, user: str = "alice") -> list[dict[str, Any]]:
    """The session's messages as the REST API has them."""
    status, body = api(platform.http, platform.tokens[user], "GET", f"/api/sessions/{session_id}/messages/")
    assert status == 200, body
    return list(body["results"])


def session_id_of(page: Page) -> int:
    return int(page.url.rstrip("/").rsplit("/", 1)[-1])


def send(page: Page, text: str) -> None:
    """Type a message and press Enter."""
    page.get_by_label("Message", exact=True).fill(text)
    page.keyboard.press("Enter")


def ask(page: Page, text: str) -> Locator:
    """Send a message; return its reply once the reply is on the page."""
    before = replies(page).count()
    send(page, text)
    expect(replies(page)).to_have_count(before + 1, timeout=30_000)
    return replies(page).nth(before)
