"""Signing in and out of the chat page."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Browser, expect

from tests.ui.site import password
from tools.launch import Platform

pytestmark = pytest.mark.slow


def test_a_visitor_is_sent_to_sign_in_and_a_wrong_password_is_refused(browser: Browser, platform: Platform) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{platform.http}/")
    expect(page).to_have_url(re.compile(r"/login/\?next=/$"))
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("not-her-password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("didn't match")
    context.close()


def test_a_user_signs_in_sees_the_agents_and_signs_out(browser: Browser, platform: Platform) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{platform.http}/")
    page.get_by_label("Username").fill("bob")
    page.get_by_label("Password").fill(password("bob"))
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{platform.http}/")
    expect(page.get_by_role("heading", name="Who do you want to talk to?")).to_be_visible()
    expect(page.locator(".user-name")).to_have_text("bob")

    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/login/$"))
    page.goto(f"{platform.http}/")
    expect(page).to_have_url(re.compile(r"/login/"))
    context.close()
