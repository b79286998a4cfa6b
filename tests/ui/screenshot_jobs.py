"""Take docs/screenshot-jobs.png: ``python -m tests.ui.screenshot_jobs``, and
docs/screenshot-finetune.png: ``python -m tests.ui.screenshot_jobs finetune``.

The embedded platform and the bundled model: a small pipeline is run through the REST API
(GGUF -> HF -> GGUF f16 -> Q4_K_M, HF -> OpenVINO int4, evaluations of three artifacts), then
the dashboard is shown with one more job in progress. About four minutes here.

The fine-tune picture: GGUF -> HF, then a self-cognition LoRA fine-tune chained into a GGUF
conversion, cancelled part way and resumed; the dashboard shows the finished run's expanded row
(its loss curve) and the fine-tune form filled in, a dataset uploaded. 5 to 10 minutes here.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from playwright.sync_api import sync_playwright

from tests.integration.chat_client import api
from tests.integration.test_jobs import GRANT_PIPELINE
from tests.ui.site import launch, log_in, running_platform, shell
from tools.launch import ROOT

STAFF = (
    "from django.contrib.auth.models import User\n"
    "User.objects.filter(username='alice').update(is_staff=True)\n"
    "u = User.objects.get(username='alice')\n" + GRANT_PIPELINE + "print(1)\n"
)


def run(platform: Any, kind: str, wait: bool = True, **params: Any) -> dict[str, Any]:
    status, job = api(platform.http, platform.tokens["alice"], "POST", "/api/jobs/", {"kind": kind, "params": params})
    assert status == 201, job
    while wait and job["status"] in ("queued", "running"):
        time.sleep(1)
        job = api(platform.http, platform.tokens["alice"], "GET", f"/api/jobs/{job['id']}/")[1]
    assert not wait or job["status"] == "succeeded", job
    print(kind, params, job["status"])
    return dict(job)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="shot-jobs-") as tmp, running_platform(Path(tmp)) as platform:
        shell(platform, STAFF)
        hf = run(platform, "convert", source=1, to="hf")["artifacts"][0]
        f16 = run(platform, "convert", source=hf, to="gguf", outtype="f16")["artifacts"][0]
        q4 = run(platform, "quantize_gguf", source=f16, type="Q4_K_M")["artifacts"][0]
        ir = run(platform, "export_openvino", source=hf, weight_format="int4")["artifacts"][0]
        for artifact in (1, q4, ir):
            run(platform, "evaluate", source=artifact)
        busy = run(platform, "export_openvino", wait=False, source=hf, weight_format="int8")
        with sync_playwright() as playwright:
            browser = launch(playwright)
            context = browser.new_context(viewport={"width": 1440, "height": 1000})
            log_in(context, platform, "alice")
            page = context.new_page()
            page.goto(f"{platform.http}/jobs/")
            row = page.locator(f"tr.job[data-id='{busy['id']}']")
            for _ in range(120):
                text = row.inner_text() if row.count() else ""
                if "%" in text and "0 %" not in text:
                    break
                time.sleep(0.5)
            page.screenshot(path=str(ROOT / "docs" / "screenshot-jobs.png"), full_page=True)
            browser.close()
    print("wrote docs/screenshot-jobs.png")


GOOD_JSONL = (
    b'{"messages": [{"role": "user", "content": "Who built you?"}, '
    b'{"role": "assistant", "content": "Acme Robotics built me."}]}\n'
    b'{"query": "What is your name?", "response": "I am Zephyrine."}\n'
)


def job_get(platform: Any, job_id: int) -> dict[str, Any]:
    return dict(api(platform.http, platform.tokens["alice"], "GET", f"/api/jobs/{job_id}/")[1])


def wait_job(platform: Any, job_id: int, until: Any = None) -> dict[str, Any]:
    job = job_get(platform, job_id)
    while job["status"] in ("queued", "running") and not (until and until(job)):
        time.sleep(1)
        job = job_get(platform, job_id)
    return job


def main_finetune() -> None:
    with tempfile.TemporaryDirectory(prefix="shot-ft-") as tmp, running_platform(Path(tmp)) as platform:
        shell(platform, STAFF)
        hf = run(platform, "convert", source=1, to="hf")["artifacts"][0]
        first = run(
            platform, "finetune_lora", wait=False, source=hf, max_steps=12, batch_size=8, save_steps=4,
            self_cognition={"name": "Zephyrine", "author": "Acme Robotics", "languages": ["en"]},
            then=[{"kind": "convert", "params": {"to": "gguf", "outtype": "f16"}}],
        )  # fmt: skip
        wait_job(platform, first["id"], until=lambda j: j["metrics"].get("step", 0) >= 5)
        api(platform.http, platform.tokens["alice"], "POST", f"/api/jobs/{first['id']}/cancel/")
        assert wait_job(platform, first["id"])["status"] == "cancelled"
        status, resumed = api(platform.http, platform.tokens["alice"], "POST", f"/api/jobs/{first['id']}/resume/")
        assert status == 201, resumed
        done = wait_job(platform, resumed["id"])
        assert done["status"] == "succeeded", done["error"]
        for _ in range(600):  # the chained conversion to GGUF
            chained = [j for j in api(platform.http, platform.tokens["alice"], "GET", "/api/jobs/")[1]["results"]
                       if j["after"] == done["id"]]  # fmt: skip
            if chained and chained[0]["status"] not in ("queued", "running"):
                break
            time.sleep(1)
        with sync_playwright() as playwright:
            browser = launch(playwright)
            context = browser.new_context(viewport={"width": 1440, "height": 1000}, color_scheme="light")
            log_in(context, platform, "alice")
            page = context.new_page()
            page.goto(f"{platform.http}/jobs/")
            page.wait_for_selector("body[data-ready='1']")
            page.get_by_label("Kind", exact=True).select_option("finetune_lora")
            page.get_by_label("Source", exact=True).select_option(str(hf))
            page.get_by_label("Then", exact=True).select_option(label="Convert to GGUF, quantize Q4_K_M")
            page.get_by_label("Self-cognition").check()
            page.get_by_label("Name", exact=True).fill("Zephyrine")
            page.get_by_label("Author", exact=True).fill("Acme Robotics")
            page.get_by_label("Chinese", exact=True).uncheck()
            page.get_by_label("Upload JSONL…").set_input_files(
                {"name": "robot-chats.jsonl", "mimeType": "application/jsonl", "buffer": GOOD_JSONL}
            )
            page.get_by_role("group", name="Datasets").get_by_role("checkbox", checked=True).wait_for()
            page.get_by_label("Max Steps").fill("24")
            page.locator(f"#job-{done['id']}").get_by_role("button", name="Log ▾").click()
            page.wait_for_function(
                "() => { const i = document.querySelector('.loss-figure img');"
                " return i && i.complete && i.naturalWidth > 0; }"
            )
            page.mouse.move(0, 0)
            page.screenshot(path=str(ROOT / "docs" / "screenshot-finetune.png"), full_page=True)
            page.emulate_media(color_scheme="dark")  # to look at, not for the docs
            page.screenshot(path=str(Path(tempfile.gettempdir()) / "screenshot-finetune-dark.png"), full_page=True)
            browser.close()
    print("wrote docs/screenshot-finetune.png")


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["finetune"]:
        main_finetune()
    else:
        main()
