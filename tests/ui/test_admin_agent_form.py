"""The admin's agent form shows the chosen backend's options as fields, and switches with it."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Browser

from tests.ui.site import shell
from tools.launch import Platform

SHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"


def test_the_option_fields_follow_the_chosen_backend(browser: Browser, platform: Platform) -> None:
    shell(
        platform,
        "import json\nfrom django.contrib.auth.models import User\n"
        "User.objects.filter(username='bob').update(is_staff=True, is_superuser=True)\nprint(json.dumps(1))",
    )
    context = browser.new_context(viewport={"width": 1280, "height": 1400})
    page = context.new_page()
    page.goto(f"{platform.http}/admin/login/?next=/admin/agents/agent/add/")
    page.fill("#id_username", "bob")
    page.fill("#id_password", "bob-password-1")
    page.click("input[type=submit]")
    page.wait_for_selector("#id_backend")

    llama = page.locator("fieldset.backend-llama_cpp")
    compat = page.locator("fieldset.backend-openai_compat")
    assert llama.is_visible() and not compat.is_visible()
    assert page.locator("#id_opt__llama_cpp__n_batch").input_value() == "512"
    assert "1 to 65536" in llama.inner_text()

    page.select_option("#id_backend", "openai_compat")
    assert compat.is_visible() and not llama.is_visible()
    assert page.locator("#id_opt__openai_compat__timeout").input_value() == "120.0"
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "admin-agent-openai-compat.png"), full_page=True)

    page.fill("#id_name", "Upstream")
    page.fill("#id_opt__openai_compat__base_url", "http://127.0.0.1:9/v1")
    page.fill("#id_opt__openai_compat__timeout", "30")
    page.click("input[name=_save]")
    page.wait_for_selector(".messagelist .success")
    stored = shell(
        platform,
        "import json\nfrom agents.models import Agent\n"
        "a = Agent.objects.get(slug='upstream')\nprint(json.dumps([a.backend, a.backend_options]))",
    )
    assert stored == ["openai_compat", {"base_url": "http://127.0.0.1:9/v1", "timeout": 30.0}]
    context.close()
