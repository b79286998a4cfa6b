"""Model output is untrusted: stored payloads must not run script, link to script or load images."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from playwright.sync_api import Page, expect

from tests.ui.site import open_session, seed_session
from tools.launch import Platform, free_port

pytestmark = pytest.mark.slow

PIXEL = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8ffff3f0005fe02fea7d6a4bb0000000049454e44ae426082"
)


class Tracker(BaseHTTPRequestHandler):
    requests: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (the http.server API)
        Tracker.requests.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.end_headers()
        self.wfile.write(PIXEL)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def tracker() -> Iterator[int]:
    """A local server standing in for a remote image host; it records every request."""
    Tracker.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Tracker)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


def payloads(port: int) -> list[str]:
    return [
        "<script>window.__pwned=1</script>",
        '<img src=x onerror="window.__pwned=1">',
        "[click](javascript:window.__pwned=1)",
        "[d](data:text/html,<script>alert(1)</script>)",
        f"![remote](http://127.0.0.1:{port}/tracker.png)",
        '<a href="javascript:window.__pwned=1" onclick="window.__pwned=1">raw link</a>',
        '<svg onload="window.__pwned=1"></svg><iframe src="javascript:window.__pwned=1"></iframe>',
        f'<div style="background:url(http://127.0.0.1:{port}/style.png)">styled</div>',
    ]


def test_stored_payloads_neither_run_nor_load_until_clicked(page: Page, platform: Platform, tracker: int) -> None:
    messages = [("user", p) for p in payloads(tracker)[:2]] + [("assistant", p) for p in payloads(tracker)]
    messages.append(("assistant", "\n\n".join(payloads(tracker))))  # all at once, as one reply
    session_id = seed_session(platform, "alice", "Payloads", messages)
    open_session(page, platform, session_id)
    page.wait_for_timeout(500)  # time for any script or image load to happen

    assert page.evaluate("typeof window.__pwned") == "undefined"
    offenders = page.evaluate(
        """() => [...document.querySelectorAll('*')].flatMap((el) => [...el.attributes]
             .filter((a) => /^on/i.test(a.name)
                 || (/^(href|src|action|formaction|xlink:href)$/i.test(a.name)
                     && /^\\s*(javascript|data):/i.test(a.value)))
             .map((a) => `${el.tagName} ${a.name}=${a.value}`))"""
    )
    assert offenders == []
    assert page.locator("#messages script, #messages iframe, #messages svg:not(.icon), #messages img").count() == 0
    assert page.locator("#messages [style]").count() == 0
    # Raw HTML is shown as text: the reader sees what the model wrote.
    expect(page.locator("article.msg-assistant").first).to_contain_text("<script>window.__pwned=1</script>")
    assert Tracker.requests == [], "no image loads before the user asks"

    button = page.get_by_role("button", name=f"Load image: remote (127.0.0.1:{tracker})").first
    button.click()
    expect(page.locator("#messages img")).to_have_count(1)
    page.wait_for_function("() => document.querySelector('#messages img').complete")
    assert Tracker.requests == ["/tracker.png"], "one click loads that one image, nothing else"
    assert page.evaluate("typeof window.__pwned") == "undefined"
