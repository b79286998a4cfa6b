"""The staff job dashboard in a real browser: a real job started from the form runs live to its
end and its artifact joins the lineage; a bad value is answered at its field; others see nothing.

The platform is the embedded default (tests/ui/site.py): jobs run in daphne's process, one at a
time, their steps in child processes, and progress reaches the page over /ws/jobs/.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.ui.site import log_in, shell
from tools.launch import Platform

STAFF = "carol"
SCREENSHOT = Path("/tmp/jobs-dashboard.png")

MAKE_STAFF = f"""
import json
from django.contrib.auth.models import User
u, _ = User.objects.get_or_create(username={STAFF!r})
u.is_staff = True
u.set_password({STAFF!r} + "-password-1")
u.save()
print(json.dumps(u.pk))
"""

BUNDLED = """
import json
from inference.models import ModelArtifact
print(json.dumps(ModelArtifact.objects.get(name__endswith="(bundled)").pk))
"""


@pytest.fixture(scope="module")
def staff_state(browser: Browser, platform: Platform) -> Any:
    shell(platform, MAKE_STAFF)
    context = browser.new_context()
    log_in(context, platform, STAFF)
    state = context.storage_state()
    context.close()
    return state


@pytest.fixture
def staff_page(browser: Browser, platform: Platform, staff_state: Any) -> Iterator[Page]:
    context = browser.new_context(storage_state=staff_state, viewport={"width": 1440, "height": 1000})
    context.set_default_timeout(20_000)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    yield tab
    context.close()
    assert not errors, f"script errors on the page: {errors}"


def open_dashboard(page: Page, platform: Platform) -> None:
    page.goto(f"{platform.http}/jobs/")
    page.wait_for_selector("body[data-ready='1']")
    expect(page.locator("#conn")).to_have_attribute("data-state", "open")


def test_a_staff_user_quantizes_the_bundled_model_and_watches_it_to_the_end(
    staff_page: Page, platform: Platform
) -> None:
    page = staff_page
    bundled = shell(platform, BUNDLED)
    page.goto(f"{platform.http}/")
    page.get_by_role("link", name="Jobs", exact=True).click()
    page.wait_for_url(f"{platform.http}/jobs/")
    open_dashboard(page, platform)

    # The form is built from the kind's schema: an enum is a select, a boolean a checkbox.
    page.get_by_label("Kind", exact=True).select_option("quantize_gguf")
    expect(page.get_by_label("Type", exact=True)).to_have_value("Q4_K_M")  # the schema's default
    page.get_by_label("Source", exact=True).select_option(str(bundled))
    page.get_by_label("Type", exact=True).select_option("Q8_0")
    page.get_by_label("Allow Requantize").check()
    page.get_by_role("button", name="Start").click()

    row = page.locator("tr.job").first
    expect(row.locator(".kind")).to_have_text("quantize_gguf")
    job_id = int(row.get_attribute("data-id") or 0)
    bar = row.get_by_role("progressbar")
    row.get_by_role("button", name=re.compile("^Log")).click()

    # Progress arrives over the websocket: a value strictly between 0 and 100, then the end.
    page.wait_for_function(
        """(id) => {
             const bar = document.querySelector(`#job-${id} [role=progressbar]`);
             const value = Number(bar && bar.getAttribute("aria-valuenow"));
             return value > 0 && value < 100;
           }""",
        arg=job_id,
        timeout=120_000,
    )
    expect(row).to_have_attribute("data-status", "succeeded", timeout=180_000)
    expect(bar).to_have_attribute("aria-valuenow", "100")
    expect(row.locator(".pill")).to_have_text("succeeded")
    log = page.locator(f"#log-{job_id}")
    expect(log).to_contain_text("-m inference.jobs.steps quantize_gguf")
    expect(log).to_contain_text("succeeded after")

    # The new artifact hangs under the bundled one in the lineage tree, servable by llama.cpp.
    child = page.locator(f'#artifacts li[data-artifact="{bundled}"] > ul > li').filter(has_text="Q8_0")
    expect(child).to_be_visible()
    expect(child.locator(".facts").first).to_contain_text("llama_cpp")
    expect(child.get_by_role("button", name="Make agent").first).to_be_visible()

    # Evaluate starts a job on it; Cancel stops that job, and Retry runs it again.
    child.get_by_role("button", name="Evaluate").first.click()
    newest = page.locator("tr.job").first
    expect(newest.locator(".kind")).to_have_text("evaluate")
    # Pinned by id: a locator of "the first row" moves to the retry's row once that appears.
    evaluation_id = int(newest.get_attribute("data-id") or 0)
    assert evaluation_id > job_id
    evaluation = page.locator(f"#job-{evaluation_id}")
    expect(evaluation).to_have_attribute("data-status", re.compile("queued|running"))
    evaluation.get_by_role("button", name="Cancel").click()
    expect(evaluation).to_have_attribute("data-status", "cancelled", timeout=30_000)
    evaluation.get_by_role("button", name="Retry").click()
    expect(page.locator("tr.job").first).not_to_have_attribute("data-id", str(evaluation_id))
    retried = page.locator(f"#job-{page.locator('tr.job').first.get_attribute('data-id')}")
    expect(retried.locator(".kind")).to_have_text("evaluate")
    retried.get_by_role("button", name="Cancel").click()
    expect(retried).to_have_attribute("data-status", "cancelled", timeout=30_000)

    expect(page.locator("#workers tbody tr")).to_have_count(1)  # the embedded default's own worker
    page.locator(f"#job-{job_id}").scroll_into_view_if_needed()
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    # Make agent: an agent on llama.cpp serving the new file, and a way into a chat with it.
    try:
        child.get_by_role("button", name="Make agent").first.click()
        chat = child.get_by_role("button", name=re.compile("^Chat with @"))
        expect(chat).to_be_visible()
        chat.click()
        page.wait_for_url(re.compile(r"/s/\d+/$"))
        expect(page.locator(".agent-line")).to_contain_text("Q8_0")
    finally:
        shell(platform, f"PK = {job_id}\n" + DELETE_AGENTS)  # the other browser tests count agents


DELETE_AGENTS = """
import json
from agents.models import Agent
print(json.dumps(Agent.objects.filter(model__created_by_job_id=PK).delete()[0]))
"""


HF_ARTIFACT = """
import json
from inference.models import ModelArtifact
bundled = ModelArtifact.objects.get(name__endswith="(bundled)")
a, _ = ModelArtifact.objects.get_or_create(name="validation-only HF row", defaults=dict(
    format="hf", path="/nonexistent", quantization="f32", parent=bundled))
print(json.dumps(a.pk))
"""

DELETE_ARTIFACT = """
import json
from inference.models import ModelArtifact
print(json.dumps(ModelArtifact.objects.filter(pk=PK).delete()[0]))
"""


def test_a_bad_value_is_answered_next_to_its_field_and_starts_nothing(staff_page: Page, platform: Platform) -> None:
    # export_openvino takes a Hugging Face model; the values are checked before the files are.
    hf = shell(platform, HF_ARTIFACT)
    page = staff_page
    try:
        open_dashboard(page, platform)
        jobs_before = page.locator("tr.job").count()
        page.get_by_label("Kind", exact=True).select_option("export_openvino")
        page.get_by_label("Source", exact=True).select_option(str(hf))
        expect(page.get_by_label("Group Size")).to_have_value("64")
        page.get_by_label("Group Size").fill("0")
        page.get_by_role("button", name="Start").click()

        error = page.locator("#param-group_size-error")
        expect(error).to_be_visible()
        expect(error).to_contain_text("group_size")
        expect(error).to_contain_text("positive number")
        expect(page.get_by_label("Group Size")).to_have_attribute("aria-invalid", "true")
        expect(page.locator("#job-form-error")).to_be_hidden()
        expect(page.locator("tr.job")).to_have_count(jobs_before)
    finally:
        shell(platform, f"PK = {hf}\n" + DELETE_ARTIFACT)


def test_a_user_who_is_not_staff_gets_no_dashboard(page: Page, platform: Platform) -> None:
    response = page.goto(f"{platform.http}/jobs/")
    assert response is not None and response.status == 404
    page.goto(f"{platform.http}/")
    expect(page.get_by_role("link", name="Leaderboard")).to_be_visible()
    expect(page.get_by_role("link", name="Jobs", exact=True)).to_have_count(0)
    assert page.request.get(f"{platform.http}/api/jobs/").status == 403
    closed = page.evaluate(
        """(url) => new Promise((resolve) => {
             const ws = new WebSocket(url);
             ws.onclose = (event) => resolve(event.code);
           })""",
        f"{platform.ws}/ws/jobs/",
    )
    assert closed == 4403
