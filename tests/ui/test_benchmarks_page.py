"""The benchmarks page in a real browser: a finished benchmark's bench.json is shown as a table of
runs, its comparisons as targets met or missed, its pictures and downloads; a running one shows
its progress and its numbers once it ends; names and errors from the file are text, never markup.

The benchmark jobs are rows made in the database with the files a benchmark job writes into its
own folder (bench.json, bench.csv, throughput.png, ttft.png): the page reads them through the job
API as it would a real run's.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.ui.site import log_in, shell
from tools.launch import Platform

STAFF = "erin"
SCREENSHOT = Path("/tmp/benchmarks-page.png")
PHONE_SCREENSHOT = Path("/tmp/benchmarks-page-phone.png")

SCRIPT_LABEL = "llama.cpp server <script>window.__pwned = 1</script>"
IMG_ERROR = '<img src=x onerror="window.__pwned = 2">'

MAKE_STAFF = f"""
import json
from django.contrib.auth.models import User
u, _ = User.objects.get_or_create(username={STAFF!r})
u.is_staff = True
u.set_password({STAFF!r} + "-password-1")
u.save()
print(json.dumps(u.pk))
"""

CREATE_JOB = """
import json
from datetime import timedelta
from django.contrib.auth.models import User
from django.utils import timezone
from pipeline.jobs.paths import job_files_dir
from inference.models import Job
now = timezone.now()
job = Job.objects.create(
    kind="benchmark", params=PARAMS, status=STATUS, progress=PROGRESS, stage=STAGE, result=RESULT,
    worker="embedded", created_by=User.objects.get(username=USER),
    started_at=now - timedelta(seconds=DURATION), heartbeat_at=now,
    finished_at=now if STATUS == "succeeded" else None,
)
folder = job_files_dir(job.pk)
folder.mkdir(parents=True, exist_ok=True)
print(json.dumps({"id": job.pk, "dir": str(folder)}))
"""

FINISH_JOB = """
import json
from django.utils import timezone
from inference.models import Job
print(json.dumps(Job.objects.filter(pk=PK).update(
    status="succeeded", progress=100.0, stage="done", result={"runs": 4}, finished_at=timezone.now())))
"""

DELETE_JOBS = """
import json
from inference.models import Job
print(json.dumps(Job.objects.filter(kind="benchmark").delete()[0]))
"""

PARAMS = {
    "agent": "assistant",
    "artifact": None,
    "concurrency": [1, 4],
    "requests": 16,
    "input_tokens": 1000,
    "output_tokens": 128,
    "compare_raw": True,
    "doors": ["v1"],
}


def latency(p50: float, spread: float) -> dict[str, float]:
    """A latency summary around its median, as bench.json's ``ttft_ms``, ``itl_ms``, ``e2e_ms``."""
    return {
        "mean": round(p50 * 1.02, 1),
        "p50": p50,
        "p90": round(p50 * (1 + spread), 1),
        "p99": round(p50 * (1 + 2 * spread), 1),
    }


def run(
    target: str, label: str, concurrency: int, *, tps: float, ttft: float, itl: float, errors: list[str]
) -> dict[str, Any]:
    failed = len(errors)
    completed = 16 - failed
    e2e = round(ttft + 127 * itl, 1)
    return {
        "target": target, "label": label, "concurrency": concurrency, "requests": 16, "completed": completed,
        "failed": failed, "duration_s": round(16 * 128 / tps, 1), "request_throughput": round(tps / 128, 2),
        "output_tps": tps, "total_tps": round(tps * 8.8, 1), "input_tokens_mean": 1003.0, "output_tokens_mean": 128.0,
        "ttft_ms": latency(ttft, 0.08), "itl_ms": latency(itl, 0.1), "e2e_ms": latency(e2e, 0.05),
        "prefill_tps_p50": round(1003 / ttft * 1000, 1), "decode_tps_p50": round(1000 / itl, 1),
        "ttft_ms_all": [ttft, round(ttft * 1.01, 1)], "errors": errors,
    }  # fmt: skip


def comparison(concurrency: int, ttft_added: float, decode: float, e2e: float) -> dict[str, Any]:
    targets = {"ttft_added_ms_p50": 15, "decode_ratio": 0.98, "e2e_tps_ratio": 0.98}
    return {
        "door": "v1", "raw": "raw_server", "concurrency": concurrency, "ttft_added_ms_p50": ttft_added,
        "decode_ratio": decode, "e2e_tps_ratio": e2e, "output_tps_ratio": round((decode + e2e) / 2, 3),
        "targets": targets,
        "met": {"ttft_added_ms_p50": ttft_added <= 15, "decode_ratio": decode >= 0.98, "e2e_tps_ratio": e2e >= 0.98},
    }  # fmt: skip


def bench_doc(*, raw_label: str, v1_errors: list[str], comparisons: list[dict[str, Any]]) -> dict[str, Any]:
    runs = [
        run("raw_server", raw_label, 1, tps=40.1, ttft=690.0, itl=11.8, errors=[]),
        run("raw_server", raw_label, 4, tps=96.4, ttft=1210.0, itl=31.5, errors=[]),
        run("v1", "platform /v1 (OpenAI API)", 1, tps=39.2, ttft=702.3, itl=12.2, errors=[]),
        run("v1", "platform /v1 (OpenAI API)", 4, tps=93.7, ttft=1236.4, itl=32.6, errors=v1_errors),
    ]
    return {
        "version": 1,
        "when": "2026-12-03T08:00:00Z",
        "machine": {
            "cpu": "AMD EPYC 7B13",
            "cores": 2,
            "threads_per_core": 1,
            "isa": ["avx2", "fma", "f16c"],
            "memory_gib": 23.5,
            "memory_bandwidth_gbs": 11.8,
            "llama_cpu_variant": "haswell",
            "hostname": "box",
        },  # fmt: skip
        "params": PARAMS,
        "model": {"name": "SmolLM2-135M-Instruct Q4_1", "backend": "llama_cpp", "format": "gguf"},
        "runs": runs,
        "comparisons": comparisons,
        "external": [
            {
                "tool": "vllm bench serve",
                "command": "vllm bench serve --backend openai-chat --base-url http://127.0.0.1:8000 "
                "--endpoint /v1/chat/completions --dataset-name random --random-input-len 1000 "
                "--random-output-len 128 --num-prompts 16 --max-concurrency 4",
                "result": {"completed": 16, "median_ttft_ms": 1228.0, "median_itl_ms": 32.1, "output_throughput": 94.0},
            },
        ],  # fmt: skip
    }


def write_files(folder: Path, bench: dict[str, Any]) -> None:
    """What a benchmark job leaves in its folder: the JSON, a CSV of the runs and two pictures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (folder / "bench.json").write_text(json.dumps(bench, indent=2))
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["target", "label", "concurrency", "completed", "failed", "output_tps", "ttft_ms_p50"])
    for r in bench["runs"]:
        writer.writerow([r["target"], r["label"], r["concurrency"], r["completed"], r["failed"], r["output_tps"],
                         r["ttft_ms"]["p50"]])  # fmt: skip
    (folder / "bench.csv").write_text(out.getvalue())
    for name, field, ylabel in (
        ("throughput.png", "output_tps", "output tokens/s"),
        ("ttft.png", "ttft", "TTFT p50 (ms)"),
    ):
        fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
        for target in dict.fromkeys(r["target"] for r in bench["runs"]):
            runs = [r for r in bench["runs"] if r["target"] == target]
            ys = [r["output_tps"] if field == "output_tps" else r["ttft_ms"]["p50"] for r in runs]
            ax.plot([r["concurrency"] for r in runs], ys, marker="o", label=runs[0]["label"])
        ax.set_xlabel("concurrency")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(folder / name)
        plt.close(fig)


def create_job(
    platform: Platform,
    *,
    status: str = "succeeded",
    progress: float = 100.0,
    stage: str = "done",
    result: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
) -> tuple[int, Path]:
    """A benchmark job row made by erin, and its own (empty) folder."""
    code = (
        f"PARAMS = {params or PARAMS!r}\nSTATUS = {status!r}\nPROGRESS = {progress!r}\nSTAGE = {stage!r}\n"
        f"RESULT = {result or {}!r}\nUSER = {STAFF!r}\nDURATION = 412\n" + CREATE_JOB
    )
    made = shell(platform, code)
    return int(made["id"]), Path(made["dir"])


@pytest.fixture(scope="module")
def staff_state(browser: Browser, platform: Platform) -> Any:
    shell(platform, MAKE_STAFF)
    context = browser.new_context()
    log_in(context, platform, STAFF)
    state = context.storage_state()
    context.close()
    return state


def staff_tab(browser: Browser, staff_state: Any, errors: list[str], width: int = 1440, height: int = 1000) -> Page:
    context = browser.new_context(storage_state=staff_state, viewport={"width": width, "height": height})
    context.set_default_timeout(20_000)
    tab = context.new_page()
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    return tab


@pytest.fixture
def staff_page(browser: Browser, staff_state: Any, platform: Platform) -> Iterator[Page]:
    errors: list[str] = []
    tab = staff_tab(browser, staff_state, errors)
    yield tab
    tab.context.close()
    shell(platform, DELETE_JOBS)
    assert not errors, f"script errors on the page: {errors}"


def test_a_finished_benchmark_shows_its_runs_targets_pictures_and_downloads(
    staff_page: Page, platform: Platform
) -> None:
    page = staff_page
    job_id, folder = create_job(platform, result={"runs": 4})
    bench = bench_doc(
        raw_label=SCRIPT_LABEL,
        v1_errors=[f"HTTP 500 from the server: {IMG_ERROR}"],
        comparisons=[comparison(1, ttft_added=12.3, decode=0.97, e2e=0.985)],
    )
    write_files(folder, bench)

    # From the job dashboard's header to the benchmarks, where the newest one is chosen.
    page.goto(f"{platform.http}/jobs/")
    page.get_by_role("link", name="Benchmarks").click()
    page.wait_for_url(f"{platform.http}/benchmarks/")
    page.wait_for_selector("body[data-ready='1']")
    item = page.locator(f"a.bench-item[data-id='{job_id}']")
    expect(item).to_contain_text("@assistant")
    expect(item).to_contain_text("1000/128")
    expect(item).to_contain_text("conc. 1 · 4")
    expect(item).to_contain_text("succeeded")
    expect(item).to_contain_text("4 runs")
    item.click()
    expect(page).to_have_url(re.compile(rf"\?job={job_id}$"))
    expect(item).to_have_attribute("aria-current", "true")

    # The machine and the parameters.
    head = page.locator(".bench-head")
    expect(head.get_by_role("heading", level=2)).to_contain_text(f"Benchmark #{job_id} · @assistant")
    machine = head.get_by_label("Machine")
    for fact in ("AMD EPYC 7B13", "2 · 1 thread/core", "avx2 fma f16c", "11.8 GB/s", "haswell"):
        expect(machine).to_contain_text(fact)
    expect(head.get_by_label("Parameters")).to_contain_text("1, 4")
    expect(head.get_by_label("Model")).to_contain_text("SmolLM2-135M-Instruct Q4_1")

    # One row per target and concurrency, raw first; the numbers of bench.json in their columns.
    rows = page.locator("#bench-runs tbody tr")
    expect(rows).to_have_count(4)
    raw_c4 = page.locator("#bench-runs tr[data-target='raw_server'][data-concurrency='4']")
    cells = raw_c4.locator("td")
    expect(cells.nth(0)).to_have_text("4")
    expect(cells.nth(1)).to_have_text("16 / 0")
    expect(cells.nth(2)).to_have_text("0.75")  # req/s
    expect(cells.nth(3)).to_have_text("96.4")  # output tok/s
    expect(cells.nth(4)).to_have_text("1210.0")  # TTFT p50
    expect(cells.nth(5)).to_have_text("1403.6")  # TTFT p99
    expect(cells.nth(6)).to_have_text("31.5")  # ITL p50
    expect(cells.nth(10)).to_have_text("31.7")  # decode tok/s
    v1_c4 = page.locator("#bench-runs tr[data-target='v1'][data-concurrency='4']")
    expect(v1_c4.locator("td").nth(1)).to_have_text("15 / 1")
    expect(v1_c4.locator("td.failed")).to_be_visible()
    expect(page.get_by_role("columnheader", name="TTFT ms")).to_be_visible()

    # The platform against the raw server: two targets met, one missed, said in words too.
    comparison_row = page.locator("#bench-comparisons tbody tr")
    expect(comparison_row).to_have_count(1)
    expect(comparison_row.locator("th")).to_contain_text("platform /v1 (OpenAI API) vs llama.cpp server")
    expect(comparison_row.locator("th")).to_contain_text("2 of 3 targets met")
    ttft = comparison_row.locator("td[data-goal='ttft_added_ms_p50']")
    expect(ttft).to_contain_text("12.3 ms")
    expect(ttft).to_contain_text("✓ met")
    expect(ttft).to_contain_text("target ≤ 15 ms")
    decode = comparison_row.locator("td[data-goal='decode_ratio']")
    expect(decode).to_contain_text("0.970")
    expect(decode).to_contain_text("✗ missed")
    expect(decode).to_contain_text("target ≥ 0.98")
    assert decode.locator(".mark").evaluate("el => getComputedStyle(el).color") != ttft.locator(".mark").evaluate(
        "el => getComputedStyle(el).color"
    )
    expect(comparison_row.locator("td[data-goal='e2e_tps_ratio']")).to_contain_text("✓ met")
    expect(comparison_row.locator("td[data-goal='output_tps_ratio'] .mark")).to_have_count(0)

    # Both pictures load; the downloads are the job's own files.
    images = page.locator(".bench-figure img")
    expect(images).to_have_count(2)
    for i in range(2):
        images.nth(i).scroll_into_view_if_needed()
        page.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=images.nth(i).element_handle())
    assert images.nth(0).evaluate("img => img.naturalWidth") == 640
    json_link = page.get_by_role("link", name="Download bench.json")
    assert json_link.get_attribute("href") == f"/api/jobs/{job_id}/files/bench.json"
    csv_link = page.get_by_role("link", name="Download bench.csv")
    got = page.request.get(f"{platform.http}{csv_link.get_attribute('href')}")
    assert got.status == 200 and got.text().startswith("target,label,concurrency")

    # The external tool's command and numbers.
    external = page.locator("#bench-external li")
    expect(external.get_by_role("heading")).to_have_text("vllm bench serve")
    expect(external.locator("pre code")).to_contain_text("vllm bench serve --backend openai-chat")
    expect(external).to_contain_text("median_itl_ms")

    # Markup in a label or an error is shown as its text and runs nothing.
    expect(page.locator("#bench-runs tr[data-target='raw_server'] th").first).to_have_text(SCRIPT_LABEL)
    expect(page.locator("#bench-errors")).to_contain_text(IMG_ERROR)
    assert page.locator("#bench-detail script, #bench-detail img[src='x']").count() == 0
    assert page.evaluate("() => window.__pwned") is None

    page.evaluate("() => window.scrollTo(0, 0)")
    page.screenshot(path=str(SCREENSHOT), full_page=True)


def test_a_running_benchmark_shows_its_progress_then_its_numbers(staff_page: Page, platform: Platform) -> None:
    page = staff_page
    job_id, folder = create_job(platform, status="running", progress=40.0, stage="v1 at concurrency 4")
    page.goto(f"{platform.http}/benchmarks/?job={job_id}")
    page.wait_for_selector("body[data-ready='1']")
    item = page.locator(f"a.bench-item[data-id='{job_id}']")
    expect(item.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "40")
    expect(item).to_contain_text("40 % · v1 at concurrency 4")
    expect(page.locator("#bench-count")).to_have_text("1 · 1 running")
    expect(page.locator("#bench-none")).to_contain_text("when the benchmark has written bench.json")

    # The job ends: the page, polling while a benchmark runs, shows the numbers without a reload.
    write_files(folder, bench_doc(raw_label="llama.cpp server (raw)", v1_errors=[],
                                  comparisons=[comparison(1, 12.3, 0.99, 0.99)]))  # fmt: skip
    shell(platform, f"PK = {job_id}\n" + FINISH_JOB)
    expect(item.locator(".pill")).to_have_text("succeeded", timeout=15_000)
    expect(page.locator("#bench-runs tbody tr")).to_have_count(4)
    expect(page.locator("#bench-comparisons .mark.missed")).to_have_count(0)
    expect(page.locator("#bench-comparisons .mark.met")).to_have_count(3)


def test_an_unknown_job_in_the_address_is_said_so(staff_page: Page, platform: Platform) -> None:
    page = staff_page
    page.goto(f"{platform.http}/benchmarks/?job=987654")
    page.wait_for_selector("body[data-ready='1']")
    expect(page.locator("#bench-none")).to_have_text("No benchmark job #987654.")
    expect(page.locator("#bench-empty")).to_be_visible()


def test_the_page_fits_a_phone(browser: Browser, staff_state: Any, platform: Platform) -> None:
    errors: list[str] = []
    job_id, folder = create_job(platform, result={"runs": 4})
    write_files(folder, bench_doc(raw_label="llama.cpp server (raw)", v1_errors=[],
                                  comparisons=[comparison(1, 12.3, 0.97, 0.985)]))  # fmt: skip
    page = staff_tab(browser, staff_state, errors, width=390, height=844)
    try:
        page.goto(f"{platform.http}/benchmarks/?job={job_id}")
        page.wait_for_selector("#bench-runs")
        # The page itself does not scroll sideways; the wide tables scroll inside their box.
        assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
        scroller = page.locator("#bench-runs").locator("xpath=..")
        assert scroller.evaluate("el => el.scrollWidth > el.clientWidth")
        expect(page.get_by_role("link", name="Jobs", exact=True)).to_be_visible()
        page.screenshot(path=str(PHONE_SCREENSHOT), full_page=True)
    finally:
        page.context.close()
        shell(platform, DELETE_JOBS)
    assert not errors, f"script errors on the page: {errors}"
