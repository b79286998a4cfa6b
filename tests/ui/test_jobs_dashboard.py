"""The staff job dashboard in a real browser: a real job started from the form runs live to its
end and its artifact joins the lineage; a bad value is answered at its field; others see nothing.
A LoRA fine-tune is set up from the form (an uploaded dataset, self-cognition), watched live,
cancelled, resumed from its checkpoint, and its loss curve shown; the fine-tune and synthesize
forms send typed params and show nested errors at their field.

The platform is the embedded default (tests/ui/site.py): jobs run in daphne's process, one at a
time, their steps in child processes, and progress reaches the page over /ws/jobs/.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.integration.chat_client import api
from tests.integration.test_jobs import GRANT_PIPELINE
from tests.platform_setup import cached_hf_code
from tests.ui.site import log_in, seed_session, shell
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
{GRANT_PIPELINE}
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
    expect(log).to_contain_text("-m pipeline.jobs.steps quantize_gguf")
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


# --- fine-tuning and synthesis from the form (issue 13) --------------------------------------------

STAFF_TOKEN = f"""
import json
from django.contrib.auth.models import User
from sessions_app.tokens import token_create
print(json.dumps(token_create(user=User.objects.get(username={STAFF!r}), name="ui-tests")[1]))
"""

GOOD_JSONL = (
    b'{"messages": [{"role": "user", "content": "Who built you?"}, '
    b'{"role": "assistant", "content": "Acme Robotics built me."}]}\n'
    b'{"query": "What is your name?", "response": "I am Zephyrine."}\n'
    b'{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, '
    b'{"role": "assistant", "content": "Hello!"}]}\n'
)
BAD_JSONL = (
    b'{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}\n'
    b'{"messages": [{"role": "user", "content": "Are you there?"}]}\n'
)


def jsonl(name: str, data: bytes) -> dict[str, Any]:
    return {"name": name, "mimeType": "application/jsonl", "buffer": data}


@pytest.fixture(scope="module")
def staff_token(platform: Platform, staff_state: Any) -> str:
    return str(shell(platform, STAFF_TOKEN))


@pytest.fixture(scope="module")
def hf_model(platform: Platform) -> int:
    """The bundled GGUF as a real Hugging Face model: the cached conversion (pipeline.hf_bundled)
    registered as an artifact, as a ``convert`` job to HF makes it (that job is tested in
    tests/integration/test_jobs.py)."""
    return int(shell(platform, cached_hf_code()))


def capture_job_posts(page: Page, answers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Answer the form's POST /api/jobs/ with `answers` in turn (a 400 each), keeping what was sent."""
    sent: list[dict[str, Any]] = []

    def handle(route: Any) -> None:
        if route.request.method != "POST":
            route.continue_()
            return
        sent.append(route.request.post_data_json)
        route.fulfill(status=400, json=answers[min(len(sent), len(answers)) - 1])

    page.route("**/api/jobs/", handle)
    return sent


def test_the_finetune_form_sends_typed_params_and_shows_nested_errors_at_their_field(
    staff_page: Page, platform: Platform
) -> None:
    page = staff_page
    chat = seed_session(platform, STAFF, "Robot small talk", [("user", "Hi"), ("assistant", "Hello there!")])
    open_dashboard(page, platform)
    sent = capture_job_posts(page, [
        {"code": "invalid", "field": "params.self_cognition.name", "message": "params.self_cognition.name: too long"},
        {"code": "invalid", "field": "params.then.1.kind", "message": "params.then.1.kind: no such kind"},
    ])  # fmt: skip
    page.get_by_label("Kind", exact=True).select_option("finetune_lora")

    # Self-cognition is off until switched on; then its own fields, languages as checkboxes.
    expect(page.get_by_label("Name", exact=True)).to_be_hidden()
    page.get_by_label("Self-cognition").check()
    page.get_by_label("Name", exact=True).fill("Zephyrine")
    page.get_by_label("Author", exact=True).fill("Acme Robotics")
    page.get_by_label("Chinese", exact=True).uncheck()
    # The signed-in user's own chats, by title; the compare picks as a plain checkbox.
    page.get_by_role("group", name="Learn from these chats").get_by_label(re.compile("Robot small talk")).check()
    page.get_by_label("Learn the replies I picked in compare").check()
    page.get_by_label("Then", exact=True).select_option(label="Convert to GGUF, quantize Q4_K_M")
    expect(page.get_by_label("Max Steps")).to_have_value("")  # nullable: empty means left out
    page.get_by_label("Batch Size").fill("4")
    page.get_by_text("More settings").click()
    page.get_by_label("Target modules").fill("q_proj, v_proj")
    page.get_by_role("button", name="Start").click()

    error = page.locator("#param-self_cognition-error")
    expect(error).to_have_text("params.self_cognition.name: too long")
    expect(page.get_by_label("Name", exact=True)).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#job-form-error")).to_be_hidden()
    params = sent[0]["params"]
    assert sent[0]["kind"] == "finetune_lora"
    assert params["self_cognition"] == {"name": "Zephyrine", "author": "Acme Robotics", "languages": ["en"]}
    assert params["sessions"] == [chat] and params["preferences"] is True and params["datasets"] == []
    assert params["then"] == [
        {"kind": "convert", "params": {"to": "gguf", "outtype": "f16"}},
        {"kind": "quantize_gguf", "params": {"type": "Q4_K_M"}},
    ]
    assert params["batch_size"] == 4 and params["target_modules"] == ["q_proj", "v_proj"]
    assert "max_steps" not in params and "resume_from" not in params
    assert params["learning_rate"] == 0.001 and params["device"] == "auto"

    # A nested index (`params.then.1.kind`) lands under its top-level field too.
    page.get_by_role("button", name="Start").click()
    expect(page.locator("#param-then-error")).to_have_text("params.then.1.kind: no such kind")
    expect(error).to_be_hidden()
    # Off again: self-cognition is left out (its default is none).
    page.get_by_label("Self-cognition").uncheck()
    page.get_by_role("button", name="Start").click()
    for _ in range(100):
        if len(sent) == 3:
            break
        page.wait_for_timeout(100)
    assert len(sent) == 3 and "self_cognition" not in sent[-1]["params"]

    # `then` is offered where a preset fits: convert to Hugging Face, not to GGUF; not on evaluate.
    page.get_by_label("Kind", exact=True).select_option("convert")
    page.get_by_label("To", exact=True).select_option("hf")
    expect(page.get_by_label("Then", exact=True)).to_be_visible()
    page.get_by_label("To", exact=True).select_option("gguf")
    expect(page.get_by_label("Then", exact=True)).to_be_hidden()
    page.get_by_label("Kind", exact=True).select_option("evaluate")
    expect(page.get_by_label("Then", exact=True)).to_have_count(0)


def test_the_synthesize_form_picks_an_agent_and_checks_the_spec_json_before_posting(
    staff_page: Page, platform: Platform
) -> None:
    page = staff_page
    open_dashboard(page, platform)
    sent = capture_job_posts(page, [{"code": "invalid", "field": "params.agent", "message": "params.agent: busy"}])
    page.get_by_label("Kind", exact=True).select_option("synthesize")
    agent = page.get_by_label("Agent", exact=True)
    expect(agent.locator("option[value='assistant']")).to_have_count(1)  # its GGUF fits; read over the API
    agent.select_option("assistant")
    expect(page.get_by_label("Source", exact=True)).to_have_value("")  # none: the agent's model
    spec = page.get_by_label("Spec (JSON)")
    example = json.loads(spec.input_value())
    assert [i["name"] for i in example["intents"]] == ["meeting.start", "meeting.mute"]

    spec.fill(spec.input_value().replace('"domain":', '"domain"'))
    page.get_by_role("button", name="Start").click()
    error = page.locator("#param-spec-error")
    expect(error).to_contain_text("spec: not valid JSON")
    expect(spec).to_have_attribute("aria-invalid", "true")
    page.wait_for_timeout(300)
    assert sent == []  # nothing was posted

    spec.fill(json.dumps(example))
    page.get_by_role("button", name="Start").click()
    expect(page.locator("#param-agent-error")).to_have_text("params.agent: busy")
    expect(error).to_be_hidden()
    assert sent[0]["kind"] == "synthesize"
    params = sent[0]["params"]
    assert params["agent"] == "assistant" and "source" not in params and params["spec"] == example
    assert params["per_intent"] == 10 and "max_attempts" not in params and "then" not in params


def test_a_staff_user_fine_tunes_from_the_dashboard_cancels_resumes_and_sees_the_loss_curve(
    staff_page: Page, platform: Platform, hf_model: int, staff_token: str
) -> None:
    page = staff_page
    open_dashboard(page, platform)
    page.get_by_label("Kind", exact=True).select_option("finetune_lora")
    page.get_by_label("Source", exact=True).select_option(str(hf_model))

    # A bad upload is answered under the field, naming its line; a good one is added, picked.
    upload = page.get_by_label("Upload JSONL…")
    upload.set_input_files(jsonl("bad-chats.jsonl", BAD_JSONL))
    error = page.locator("#param-datasets-error")
    expect(error).to_contain_text("line 2")
    expect(error).to_contain_text("the last message must be the assistant's")
    upload.set_input_files(jsonl("robot-chats.jsonl", GOOD_JSONL))
    expect(error).to_be_hidden()
    picked = page.get_by_role("group", name="Datasets").get_by_label(re.compile("robot-chats.jsonl"))
    expect(picked).to_be_checked()
    expect(picked).to_have_count(1)
    dataset = int(picked.get_attribute("value") or 0)

    page.get_by_label("Self-cognition").check()
    page.get_by_label("Name", exact=True).fill("Zephyrine")
    page.get_by_label("Author", exact=True).fill("Acme Robotics")
    page.get_by_label("Chinese", exact=True).uncheck()
    page.get_by_label("Max Steps").fill("3")
    page.get_by_label("Batch Size").fill("4")
    page.get_by_label("Save Steps").fill("1")
    page.get_by_role("button", name="Start").click()

    row = page.locator("tr.job").first
    expect(row.locator(".kind")).to_have_text("finetune_lora")
    job_id = int(row.get_attribute("data-id") or 0)
    row = page.locator(f"#job-{job_id}")
    params = api(platform.http, staff_token, "GET", f"/api/jobs/{job_id}/")[1]["params"]
    assert params["self_cognition"]["name"] == "Zephyrine" and params["self_cognition"]["languages"] == ["en"]
    assert params["datasets"] == [dataset] and params["max_steps"] == 3 and params["save_steps"] == 1

    # Live: the stage names the step and the loss; then Cancel stops it at the next step.
    expect(row.locator(".bar-text")).to_contain_text(re.compile(r"step \d/3 · loss \d"), timeout=240_000)
    row.get_by_role("button", name="Cancel").click()
    expect(row).to_have_attribute("data-status", "cancelled", timeout=240_000)
    resume = row.get_by_role("button", name="Resume")
    expect(resume).to_be_visible()
    resume.click()

    expect(page.locator("tr.job").first).not_to_have_attribute("data-id", str(job_id))
    resumed_id = int(page.locator("tr.job").first.get_attribute("data-id") or 0)
    resumed = page.locator(f"#job-{resumed_id}")
    expect(resumed.locator(".chain")).to_have_text(f"resumes #{job_id}")
    expect(resumed).to_have_attribute("data-status", "succeeded", timeout=360_000)
    expect(resumed.locator("svg.spark")).to_be_visible()  # the loss by step, both jobs' steps

    # Its expanded row: the saved loss curve (the picture loads) and the run's numbers.
    resumed.get_by_role("button", name=re.compile("^Log")).click()
    detail = page.locator(f'tr[data-log-for="{resumed_id}"]')
    picture = detail.get_by_role("img", name=re.compile("Training loss"))
    expect(picture).to_be_visible()
    page.wait_for_function(
        """(id) => {
             const img = document.querySelector(`tr[data-log-for="${id}"] img.loss`);
             return img && img.complete && img.naturalWidth > 0;
           }""",
        arg=resumed_id,
        timeout=30_000,
    )
    expect(detail.locator("figcaption")).to_contain_text(re.compile(r"^3 steps · loss \d\.\d+ → \d\.\d+"))
    page.locator(f"#job-{resumed_id}").scroll_into_view_if_needed()
    page.screenshot(path=str(FINETUNE_SCREENSHOT), full_page=True)


FINETUNE_SCREENSHOT = Path("/tmp/jobs-finetune.png")
