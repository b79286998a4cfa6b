"""Take docs/screenshot-benchmarks.png: ``python -m tests.ui.screenshot_benchmarks``.

The embedded platform with four benchmark jobs made in the database (one failed, one older, the
one shown, and one still running). The one shown carries the files of the last real run of
``python -m tools.bench_serving`` (docs/bench/serving) when there is one, else made-up numbers
in the same shape. Under a minute here.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from playwright.sync_api import sync_playwright

from tests.ui.site import launch, log_in, running_platform, shell
from tests.ui.test_benchmarks_page import MAKE_STAFF, PARAMS, STAFF, bench_doc, comparison, create_job, run, write_files
from tools.launch import ROOT

SHOT = ROOT / "docs" / "screenshot-benchmarks.png"
MEASURED = ROOT / "docs" / "bench" / "serving"

FAIL = """
import json
from inference.models import Job
print(json.dumps(Job.objects.filter(pk=PK).update(
    error="raw_server: llama.cpp's server did not answer on 127.0.0.1:8081 within 120 s; see the log.")))
"""


def shown_doc() -> dict[str, Any]:
    """Three targets at three levels, compared at each level; the websocket misses one target."""
    speeds = {  # concurrency -> (output tok/s, TTFT ms, ITL ms) of the raw server
        1: (84.2, 712.0, 11.6),
        4: (171.5, 1480.0, 22.4),
        16: (228.9, 4210.0, 61.8),
    }
    runs = []
    for target, label, slower, added in (
        ("raw_server", "llama.cpp server (raw)", 1.0, 0.0),
        ("v1", "platform /v1 (OpenAI API)", 0.988, 9.8),
        ("websocket", "platform websocket", 0.972, 14.1),
    ):
        for level, (tps, ttft, itl) in speeds.items():
            runs.append(run(target, label, level, tps=round(tps * slower, 1), ttft=round(ttft + added, 1),
                            itl=round(itl / slower, 1), errors=[]))  # fmt: skip
    doc = bench_doc(raw_label="llama.cpp server (raw)", v1_errors=[], comparisons=[])
    doc["runs"] = runs
    doc["params"] = {**PARAMS, "concurrency": [1, 4, 16], "doors": ["v1", "websocket"]}
    doc["comparisons"] = [
        comparison(1, 9.8, 0.988, 0.987),
        comparison(16, 9.8, 0.985, 0.99),
        {**comparison(1, 14.1, 0.972, 0.975), "door": "websocket"},
    ]
    return doc


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="shot-bench-") as tmp, running_platform(Path(tmp)) as platform:
        shell(platform, MAKE_STAFF)
        failed, _ = create_job(platform, status="failed", progress=8.0, stage="raw_server")
        shell(platform, f"PK = {failed}\n" + FAIL)
        older, folder = create_job(platform, result={"runs": 4}, params={**PARAMS, "input_tokens": 256})
        write_files(folder, bench_doc(raw_label="llama.cpp server (raw)", v1_errors=[],
                                      comparisons=[comparison(1, 11.2, 0.99, 0.985)]))  # fmt: skip
        if MEASURED.is_dir() and (MEASURED / "bench.json").is_file():
            # The real thing: what python -m tools.bench_serving measured here (docs/bench/serving).
            doc = json.loads((MEASURED / "bench.json").read_text())
            shown, folder = create_job(platform, result={"runs": len(doc["runs"])}, params=doc["params"])
            for name in ("bench.json", "bench.csv", "throughput.png", "ttft.png"):
                shutil.copyfile(MEASURED / name, folder / name)
        else:
            doc = shown_doc()
            shown, folder = create_job(platform, result={"runs": 9}, params=doc["params"])
            write_files(folder, doc)
        create_job(platform, status="running", progress=62.0, stage="websocket at concurrency 4",
                   params={**PARAMS, "agent": "pirate", "concurrency": [1, 4, 16]})  # fmt: skip
        with sync_playwright() as playwright:
            browser = launch(playwright)
            context = browser.new_context(viewport={"width": 1440, "height": 1000})
            log_in(context, platform, STAFF)
            page = context.new_page()
            page.goto(f"{platform.http}/benchmarks/?job={shown}")
            page.wait_for_selector(".bench-figure img")
            page.wait_for_function(
                "() => [...document.querySelectorAll('.bench-figure img')].every((i) => i.complete && i.naturalWidth)"
            )
            page.screenshot(path=str(SHOT), full_page=True)
            browser.close()
    print(f"wrote {SHOT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
