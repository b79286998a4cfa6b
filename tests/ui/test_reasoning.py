"""A reasoning model's thinking on the chat page: a block above the answer that streams open under
"Thinking…", folds when the answer starts, says "Thought for N s", opens on a click, and shows the
model's text as text. The agent is an ``openai_compat`` one on a server that streams what QwQ-32B
writes (only ``</think>``), slowly enough to watch."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.inference.scripted_server import Script, content, scripted_server
from tests.ui.helpers import last_reply, send, wait_final
from tests.ui.site import shell
from tools.launch import Platform

pytestmark = pytest.mark.slow

THINKING = ["First", " I add", " <b>two</b>", " and two", ".", "\n</think>\n\n"]
ANSWER = ["Two and two", " make four."]
PAUSE = 0.4  # between the thinking's pieces: the page is seen while it thinks
THOUGHT_FOR = re.compile(r"^Thought for \d+ s$")
AGENT = """
import json
from agents.models import Agent
agent, _ = Agent.objects.update_or_create(slug="thinker-ui", defaults=dict(
    name="Deep Thinker", backend="openai_compat", backend_options={"base_url": URL}, reasoning="think_tags",
    is_active=True))
print(json.dumps(agent.pk))
"""
HIDE = "from agents.models import Agent\nprint(Agent.objects.filter(slug='thinker-ui').update(is_active=False))"


class SlowScript(Script):
    """Streams the thinking piece by piece with a pause; the answer at once."""

    def events(self) -> Iterator[dict[str, Any]]:
        for event in super().events():
            delta = event["choices"][0]["delta"]
            if delta.get("content") in THINKING:
                time.sleep(PAUSE)
            yield event


@pytest.fixture(scope="module")
def thinker(platform: Platform) -> Iterator[str]:
    script = SlowScript(deltas=[content(piece) for piece in THINKING + ANSWER])
    with scripted_server(script) as url:
        shell(platform, f"URL = {url!r}\n" + AGENT)
        yield "Deep Thinker"
    # Out of the other tests' agent pickers.
    shell(
        platform,
        "from agents.models import Agent\nprint(Agent.objects.filter(slug='thinker-ui').update(is_active=False))",
    )


def test_the_thinking_streams_open_then_folds_above_the_answer(page: Page, platform: Platform, thinker: str) -> None:
    page.goto(f"{platform.http}/")
    page.locator(".agent-card", has_text=thinker).click()
    page.wait_for_selector("body[data-ready='1']")
    send(page, "What is two and two?")

    reply = last_reply(page)
    block = reply.locator("details.thinking")
    summary = block.locator("summary")
    expect(summary).to_have_text("Thinking…", timeout=30_000)
    expect(block).to_have_attribute("open", "")  # open while only the thinking streams
    expect(block.locator(".thinking-body")).to_contain_text("First I add")

    assert wait_final(reply, timeout=60_000) == "complete"
    expect(reply.locator(".msg-body")).to_have_text("".join(ANSWER))
    expect(summary).to_have_text(THOUGHT_FOR)
    assert block.get_attribute("open") is None  # folded once the answer began
    body = block.locator(".thinking-body")
    expect(body).to_be_hidden()
    # The block sits above the answer.
    block_box, answer_box = block.bounding_box(), reply.locator(".msg-body").bounding_box()
    assert block_box is not None and answer_box is not None and block_box["y"] < answer_box["y"]

    summary.click()  # the reader opens it
    expect(body).to_be_visible()
    expect(body).to_have_text("First I add <b>two</b> and two.")  # the model's markup is text
    assert body.locator("b").count() == 0

    page.reload()  # from the stored reply: folded, with the server's time
    page.wait_for_selector("body[data-ready='1']")
    again = last_reply(page).locator("details.thinking")
    expect(again.locator("summary")).to_have_text(THOUGHT_FOR)
    assert again.get_attribute("open") is None
