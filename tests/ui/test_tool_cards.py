"""An agent's tool calls on the chat page: a folded card per call above the answer, there while the
reply runs and brought up to date when the call ends, showing what the server stored (tool,
arguments, result or error, duration), and the same after a reload. The agent runs on the bundled
model with the built-in calculator and ``tool_choice: "required"``; the 135M model may write any
expression, so the card is checked against the stored call, whatever it holds. Results are
untrusted: a stored one carrying HTML is shown as text. The picker names an agent's tools."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, expect

from tests.ui.helpers import last_reply, send, session_id_of, stored, wait_final
from tests.ui.site import open_session, shell
from tools.launch import Platform

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "docs" / "screenshot-tool-cards.png"
DARK_SCREENSHOT = ROOT / "var" / "screenshots" / "tool-cards-dark.png"
DURATION = re.compile(r"^\d+ ms$|^\d+(\.\d)? s$|^\d+m \d\ds$")
SHOWN = {"ok": "ok", "error": "error", "cancelled": "stopped"}

AGENT = """
import json
from agents.models import Agent
bundled = Agent.objects.get(slug="assistant")
agent, _ = Agent.objects.update_or_create(slug="calc-ui", defaults=dict(
    name="Calculon", description="Does sums with the calculator.", avatar_emoji="🧮",
    system_prompt="",
    backend=bundled.backend, model=bundled.model, max_tokens=160, temperature=0.0,
    tools=["calculator"], tool_choice="required", max_tool_steps=1, is_active=True))
print(json.dumps(agent.pk))
"""
HIDE = "from agents.models import Agent\nprint(Agent.objects.filter(slug='calc-ui').update(is_active=False))"

HOSTILE_RESULT = '<img src=x onerror="window.__pwned=1"> and <b>bold</b>'
HOSTILE_ERROR = "<script>window.__pwned=1</script> failed"
SEED = """
import json
from django.contrib.auth.models import User
from agents.models import Agent
from sessions_app.models import Message, Session
owner = User.objects.get(username="alice")
agent = Agent.objects.get(slug="calc-ui")
session = Session.objects.create(owner=owner, agent=agent, title="Tool results as text")
session.agents.add(agent)
question = Message.objects.create(session=session, role="user", content="Look it up, then add 2 and 40.")
Message.objects.create(session=session, role="assistant", agent=agent, backend=agent.backend, reply_to=question,
    status="complete", content="The page says nothing useful; **2 + 40 = 42**.", tool_calls=CALLS)
again = Message.objects.create(session=session, role="user", content="And the time?")
Message.objects.create(session=session, role="assistant", agent=agent, backend=agent.backend, reply_to=again,
    status="interrupted", content="", tool_calls=UNFINISHED)
print(json.dumps(session.pk))
"""
CALLS = [
    {"id": "call_1", "name": "demo.fetch", "arguments": json.dumps({"url": "<b>x</b>", "limit": 2}),
     "result": HOSTILE_RESULT, "error": "", "status": "ok", "duration_ms": 184},
    {"id": "call_2", "name": "demo.lookup", "arguments": "not json <i>at all</i>",
     "result": "", "error": HOSTILE_ERROR, "status": "error", "duration_ms": 2350},
    {"id": "call_3", "name": "calculator", "arguments": json.dumps({"expression": "2 + 40"}),
     "result": "42", "error": "", "status": "ok", "duration_ms": 3},
]  # fmt: skip
UNFINISHED = [
    {"id": "call_4", "name": "current_time", "arguments": "{}", "result": "", "error": "", "status": "running",
     "duration_ms": 0},
]  # fmt: skip


@pytest.fixture(scope="module")
def calculon(platform: Platform) -> Iterator[str]:
    shell(platform, AGENT)
    yield "Calculon"
    shell(platform, HIDE)  # out of the other tests' agent pickers


def card_shown(card: Locator) -> dict[str, Any]:
    """What a card shows: tool, status, duration, arguments and result or error, as text."""
    return card.evaluate(
        """(el) => ({
            id: el.dataset.callId, tool: el.querySelector('.tool-name').textContent,
            status: el.querySelector('.tool-status').textContent,
            duration: el.querySelector('.tool-duration').textContent,
            args: el.querySelector('.tool-args').textContent,
            label: el.querySelector('.tool-out-part .tool-label').textContent,
            out: el.querySelector('.tool-out').textContent,
        })"""
    )


def same_arguments(shown: str, stored_arguments: str) -> bool:
    """The card shows the stored arguments, indented if they are JSON, else as they came."""
    try:
        return bool(json.loads(shown) == json.loads(stored_arguments))
    except ValueError:
        return shown == stored_arguments


def test_a_tool_call_is_a_card_that_streams_in_and_survives_a_reload(
    page: Page, platform: Platform, calculon: str
) -> None:
    page.goto(f"{platform.http}/")
    picker_card = page.locator(".agent-card", has_text=calculon)
    expect(picker_card.locator(".tool-chip")).to_have_text(["calculator"])  # the picker names its tools
    picker_card.click()
    page.wait_for_selector("body[data-ready='1']")
    expect(page.locator(".chip[data-agent='calc-ui'] .chip-tools")).to_have_attribute("title", "Tools: calculator")
    # Each card as it is created: was its reply still running then (the card streamed in)?
    page.evaluate(
        """() => {
            window.__cards = [];
            new MutationObserver((records) => {
                for (const r of records) for (const node of r.addedNodes) {
                    if (node.classList?.contains('tool-call')) {
                        window.__cards.push({reply: node.closest('article').dataset.status,
                                             card: node.dataset.status});
                    }
                }
            }).observe(document.getElementById('messages'), {childList: true, subtree: true});
        }"""
    )
    send(page, "Use the calculator to compute 6*7.")
    reply = last_reply(page)
    assert wait_final(reply, timeout=240_000) == "complete"

    session_id = session_id_of(page)
    calls = stored(platform, session_id)[-1]["tool_calls"]
    assert calls, "the reply stored no tool calls (tool_choice is required)"
    assert calls[0]["name"] == "calculator"
    assert calls[0]["status"] in ("ok", "error"), calls[0]
    created = page.evaluate("window.__cards")
    assert len(created) == len(calls)
    assert all(c["reply"] in ("queued", "streaming") for c in created), created  # shown while it ran

    cards = reply.locator(".tool-call")
    expect(cards).to_have_count(len(calls))
    first = cards.first
    # Folded, above the answer; a click opens it on the arguments and the result or error.
    expect(first.locator(".tool-detail")).to_be_hidden()
    card_box, answer_box = first.bounding_box(), reply.locator(".msg-body").bounding_box()
    assert card_box is not None and answer_box is not None and card_box["y"] < answer_box["y"]
    first.locator("summary").click()
    expect(first.locator(".tool-args")).to_be_visible()
    expect(first.locator(".tool-out")).to_be_visible()

    before = [card_shown(cards.nth(i)) for i in range(len(calls))]
    for shown, call in zip(before, calls, strict=True):
        assert shown["id"] == call["id"] and shown["tool"] == call["name"]
        assert shown["status"] == SHOWN[call["status"]]
        assert DURATION.match(shown["duration"]), shown["duration"]
        assert same_arguments(shown["args"], call["arguments"]), (shown["args"], call["arguments"])
        if call["status"] == "ok":
            assert (shown["label"], shown["out"]) == ("Result", call["result"] or "(no output)")
        else:
            assert (shown["label"], shown["out"]) == ("Error", call["error"])
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT))

    page.reload()  # from the snapshot: the same cards, folded
    page.wait_for_selector("body[data-ready='1']")
    again = last_reply(page).locator(".tool-call")
    expect(again).to_have_count(len(calls))
    expect(again.first.locator(".tool-detail")).to_be_hidden()
    assert [card_shown(again.nth(i)) for i in range(len(calls))] == before


def test_tool_results_and_arguments_are_shown_as_text(page: Page, platform: Platform, calculon: str) -> None:
    session_id = int(shell(platform, f"CALLS = {CALLS!r}\nUNFINISHED = {UNFINISHED!r}\n" + SEED))
    open_session(page, platform, session_id)
    cards = page.locator("article.msg-assistant").first.locator(".tool-call")
    expect(cards).to_have_count(3)
    for i in range(3):
        cards.nth(i).locator("summary").click()
    page.wait_for_timeout(300)  # time for any injected handler or image load to run

    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.locator("#messages img, #messages script, #messages b, #messages i").count() == 0
    fetched, failed, sum_ = (card_shown(cards.nth(i)) for i in range(3))
    assert fetched["out"] == HOSTILE_RESULT and fetched["label"] == "Result"
    assert json.loads(fetched["args"]) == {"url": "<b>x</b>", "limit": 2}
    assert fetched["duration"] == "184 ms" and fetched["status"] == "ok"
    expect(cards.nth(0).locator(".tool-preview")).to_have_text("url: <b>x</b>, limit: 2")
    assert (failed["status"], failed["label"], failed["out"]) == ("error", "Error", HOSTILE_ERROR)
    assert failed["args"] == "not json <i>at all</i>" and failed["duration"] == "2.4 s"
    assert (sum_["tool"], sum_["out"], sum_["duration"]) == ("calculator", "42", "3 ms")

    # A call left running when its reply was interrupted did not finish: no spinner for ever.
    unfinished = page.locator("article.msg-assistant").nth(1).locator(".tool-call")
    expect(unfinished).to_have_attribute("data-status", "unfinished")
    expect(unfinished.locator(".tool-status")).to_have_text("did not finish")

    # The dark theme, for a look (the light one is the docs' screenshot, from the live test).
    page.emulate_media(color_scheme="dark")
    page.evaluate("localStorage.removeItem('chatsite-theme')")
    page.reload()
    page.wait_for_selector("body[data-ready='1']")
    for i in range(2):
        page.locator("article.msg-assistant").first.locator(".tool-call").nth(i).locator("summary").click()
    DARK_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(DARK_SCREENSHOT))
