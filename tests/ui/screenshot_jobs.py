"""Take docs/screenshot-jobs.png: ``python -m tests.ui.screenshot_jobs``.

The embedded platform and the bundled model: a small pipeline is run through the REST API
(GGUF -> HF -> GGUF f16 -> Q4_K_M, HF -> OpenVINO int4, evaluations of three artifacts), then
the dashboard is shown with one more job in progress. About four minutes here.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from playwright.sync_api import sync_playwright

from tests.integration.chat_client import api
from tests.ui.site import launch, log_in, running_platform, shell
from tools.launch import ROOT

STAFF = (
    "from django.contrib.auth.models import User\n"
    "User.objects.filter(username='alice').update(is_staff=True)\n"
    "print(1)\n"
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


if __name__ == "__main__":
    main()
