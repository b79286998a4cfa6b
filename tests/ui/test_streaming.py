"""A new chat with a picked agent, and a reply from the bundled model streamed onto the page."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.integration.chat_client import api
from tests.ui.helpers import ask, copied, last_reply, session_id_of, stored, wait_final
from tools.launch import Platform, free_port, manage

pytestmark = pytest.mark.slow


def test_the_picker_shows_each_agent_and_starts_the_chat_with_the_one_picked(page: Page, platform: Platform) -> None:
    page.goto(f"{platform.http}/")
    pirate = page.locator(".agent-card", has_text="Pirate")
    expect(pirate).to_contain_text("Answers every question like an old sea captain.")
    expect(pirate).to_contain_text("llama.cpp")
    expect(pirate).to_contain_text("node edge-01")
    expect(pirate.locator(".agent-avatar")).to_have_text("🏴‍☠️")

    pirate.click()
    page.wait_for_selector("body[data-ready='1']")
    expect(page.locator(".agent-line")).to_contain_text("Pirate")
    status, session = api(platform.http, platform.tokens["alice"], "GET", f"/api/sessions/{session_id_of(page)}/")
    assert status == 200 and session["agent"] == "pirate"


def test_a_reply_streams_in_shows_its_state_and_stats_and_ends_done(page: Page, platform: Platform) -> None:
    page.goto(f"{platform.http}/")
    page.locator(".agent-card", has_text="Assistant").click()
    page.wait_for_selector("body[data-ready='1']")

    prompt = page.get_by_label("Message", exact=True)
    prompt.fill("What is the capital of France?")
    prompt.press("Shift+Enter")
    prompt.type("Answer in one sentence.")
    assert prompt.input_value() == "What is the capital of France?\nAnswer in one sentence."
    assert page.locator("article.msg").count() == 0  # Shift+Enter only added a line

    prompt.press("Enter")
    expect(prompt).to_have_value("")
    mine = page.locator("article.msg-user")
    expect(mine).to_have_count(1)
    expect(mine.locator(".msg-body")).to_have_text("What is the capital of France?\nAnswer in one sentence.")

    reply = last_reply(page)
    expect(reply.locator(".status")).to_have_text("generating", timeout=60_000)
    assert wait_final(reply) == "complete"
    expect(reply.locator(".status")).to_have_text("done")
    stats = reply.locator(".msg-stats")
    for part in ("Assistant", "llama.cpp", "tokens", "TTFT", "tokens/s"):
        expect(stats).to_contain_text(part)
    expect(page.locator("#session-title")).to_have_text("What is the capital of France? Answer in one sentence.")

    rows = stored(platform, session_id_of(page))
    assert [r["role"] for r in rows] == ["user", "assistant"]
    assert rows[1]["status"] == "complete" and rows[1]["content"].strip()
    assert copied(page, reply) == rows[1]["content"]
    assert copied(page, mine) == rows[0]["content"]


def test_the_agent_named_in_the_composer_answers(page: Page, platform: Platform) -> None:
    page.goto(f"{platform.http}/")
    page.locator(".agent-card", has_text="Assistant").click()
    page.wait_for_selector("body[data-ready='1']")
    page.get_by_label("Reply with").select_option("pirate")
    reply = ask(page, "Hello, who are you?")
    assert wait_final(reply) == "complete"
    expect(reply.locator(".msg-who")).to_have_text("Pirate")
    assert stored(platform, session_id_of(page))[1]["agent"] == "pirate"


BROKEN_AGENT = """
from agents.models import Agent
Agent.objects.update_or_create(slug="unreachable", defaults=dict(
    name="Unreachable", description="Its server is down.", backend="openai_compat",
    backend_options={{"base_url": "http://127.0.0.1:{port}/v1", "model": "none", "timeout": 5}}))
"""


def test_a_failed_reply_says_so_with_the_error(page: Page, platform: Platform) -> None:
    manage(platform.env, "shell", "-c", BROKEN_AGENT.format(port=free_port()))
    try:
        page.goto(f"{platform.http}/")
        page.locator(".agent-card", has_text="Unreachable").click()
        page.wait_for_selector("body[data-ready='1']")
        reply = ask(page, "Anyone there?")
        assert wait_final(reply, timeout=90_000) == "failed"
        expect(reply.locator(".status")).to_have_text("failed")
        expect(reply.locator(".msg-error")).to_contain_text("Cannot reach")
    finally:
        manage(
            platform.env,
            "shell",
            "-c",
            "from agents.models import Agent; Agent.objects.filter(slug='unreachable').delete()",
        )
