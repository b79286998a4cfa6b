"""Multi-agent chats in the browser, on the real platform with the bundled model: participants
added with the chips, a round-robin policy picked, replies labelled by agent; an @mention; and a
compare whose pick moves the leaderboard."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from tests.ui.helpers import replies, send, session_id_of, stored, wait_final
from tools.launch import Platform


def new_chat(page: Page, platform: Platform) -> int:
    page.goto(f"{platform.http}/")
    page.locator(".agent-card", has_text="Assistant").click()
    page.wait_for_selector("body[data-ready='1']")
    return session_id_of(page)


def test_a_round_robin_chat_of_two_agents(page: Page, platform: Platform) -> None:
    sid = new_chat(page, platform)
    chips = page.get_by_role("list", name="Agents in this chat")
    expect(chips.locator(".chip")).to_have_count(1)
    page.get_by_label("Add an agent to this chat").select_option("pirate")
    expect(chips.locator(".chip")).to_have_count(2)
    expect(chips.locator(".chip").nth(1)).to_contain_text("Pirate")
    page.get_by_label("Turn policy").select_option("round_robin")
    page.get_by_label("Rounds").fill("1")
    page.get_by_role("button", name="Apply").click()
    # Stored on the server before the message goes (the select shows the choice before that).
    expect(page.get_by_role("form", name="Who answers").get_by_role("status")).to_have_text("Applied")
    expect(page.get_by_label("Turn policy")).to_have_value("round_robin")

    send(page, "Name one colour.")
    # The second turn starts only when the first has ended, on the shared embedded pool that other
    # tests' replies may still hold, beside the jobs group's torch steps in make test.
    expect(replies(page)).to_have_count(2, timeout=90_000)
    for reply in (replies(page).nth(0), replies(page).nth(1)):
        assert wait_final(reply) == "complete"
    expect(replies(page).nth(0).locator(".msg-who")).to_have_text("Assistant")
    expect(replies(page).nth(1).locator(".msg-who")).to_have_text("Pirate")
    rows = stored(platform, sid)
    assert [(m["agent"], m["turn"]) for m in rows if m["role"] == "assistant"] == [("assistant", 1), ("pirate", 2)]

    # Removing a participant: the chips and the stored session follow.
    page.get_by_role("button", name="Remove Pirate").click()
    expect(chips.locator(".chip")).to_have_count(1)


def test_an_at_mention_is_completed_and_only_that_agent_answers(page: Page, platform: Platform) -> None:
    sid = new_chat(page, platform)
    page.get_by_label("Add an agent to this chat").select_option("pirate")
    expect(page.locator(".chip")).to_have_count(2)
    box = page.get_by_label("Message", exact=True)
    box.fill("")
    box.type("@pi")
    expect(page.get_by_role("option", name="@pirate · Pirate")).to_be_visible()
    page.keyboard.press("Enter")  # completes, does not send
    expect(box).to_have_value("@pirate ")
    box.type("who are you?")
    page.keyboard.press("Enter")
    expect(replies(page)).to_have_count(1, timeout=60_000)
    assert wait_final(replies(page).first) == "complete"
    expect(replies(page).first.locator(".msg-who")).to_have_text("Pirate")
    page.wait_for_timeout(1500)
    assert [m["agent"] for m in stored(platform, sid) if m["role"] == "assistant"] == ["pirate"]


def test_compare_two_agents_pick_one_and_see_the_leaderboard(page: Page, platform: Platform) -> None:
    sid = new_chat(page, platform)
    page.get_by_role("button", name="Compare").click()
    panel = page.locator("#compare-panel")
    panel.get_by_label("Assistant").check()
    panel.get_by_label("Pirate").check()
    send(page, "Say hello.")
    row = page.get_by_role("group", name="Replies compared side by side")
    expect(row.locator("article")).to_have_count(2, timeout=60_000)
    for reply in (row.locator("article").nth(0), row.locator("article").nth(1)):
        assert wait_final(reply) == "complete"
    page.screenshot(path=str(platform.log_dir / "compare.png"))
    pirate = row.locator("article", has=page.locator(".msg-who", has_text="Pirate"))
    pirate.get_by_role("button", name="Pick as best").click()
    expect(pirate).to_have_class(__import__("re").compile(r"\bis-picked\b"))
    expect(pirate.get_by_role("button", name="Picked")).to_be_visible()
    picked = [m for m in stored(platform, sid) if m["picked"]]
    assert [m["agent"] for m in picked] == ["pirate"]

    page.goto(f"{platform.http}/leaderboard")
    pirate_row = page.locator("tr[data-agent='pirate']")
    expect(pirate_row).to_be_visible()
    assert int(pirate_row.locator("td").nth(4).inner_text()) >= 1  # wins
    page.screenshot(path=str(platform.log_dir / "leaderboard.png"))
