"""One real platform (daphne, SQLite, the bundled model) and one Chromium for all browser tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.ui.site import launch, log_in, running_platform
from tools.launch import Platform


@pytest.fixture(scope="package")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    with running_platform(tmp_path_factory.mktemp("ui")) as running:
        yield running


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = launch(playwright)
        yield chromium
        chromium.close()


@pytest.fixture(scope="package")
def alice_state(browser: Browser, platform: Platform) -> Any:
    """Alice's signed-in cookies, so each test starts signed in without the form."""
    context = browser.new_context()
    log_in(context, platform, "alice")
    state = context.storage_state()
    context.close()
    return state


@pytest.fixture
def page(browser: Browser, platform: Platform, alice_state: Any) -> Iterator[Page]:
    """A fresh tab signed in as alice; a page error (an exception in our script) fails the test."""
    context = browser.new_context(storage_state=alice_state, viewport={"width": 1280, "height": 860})
    context.set_default_timeout(20_000)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=platform.http)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    yield tab
    context.close()
    assert not errors, f"script errors on the page: {errors}"
