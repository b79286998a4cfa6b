"""The staff workers page in a real browser, over a distributed platform (its own PostgreSQL
database and Redis, daphne, a prefork worker for replies and a thread-pool worker for jobs):
both workers listed with their queues and processes, a model unloaded after its keep-alive,
a killed worker shown lost within 10 s, and a streaming reply shown running with its model in
use. Others get no page. Takes docs/screenshot-workers.png.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.integration.chat_client import Watcher, api, send, ws_open
from tests.integration.services import scratch_database
from tests.platform_setup import prepare, static_root
from tests.ui.site import log_in
from tools.launch import ROOT, Platform, PrivateRedis, free_port, platform_env

pytestmark = pytest.mark.slow

SCREENSHOT = ROOT / "docs" / "screenshot-workers.png"
KEEP_ALIVE = 8  # seconds, so that the page shows a model unloaded while the test waits

SETUP = """
from django.contrib.auth.models import User
from agents.models import Agent
User.objects.filter(username="bob").update(is_staff=True)
Agent.objects.filter(slug="assistant").update(max_tokens=400, temperature=0.0)
print(1)
"""


@pytest.fixture(scope="module")
def distributed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    folder = tmp_path_factory.mktemp("workers-ui")
    redis_server = PrivateRedis(folder)
    redis_server.start()
    try:
        with scratch_database() as database_url:
            env = platform_env(data_dir=folder, database_url=database_url, redis_url=redis_server.url,
                               MODEL_CACHE_IDLE_SECONDS=str(KEEP_ALIVE), STATIC_ROOT=static_root())  # fmt: skip
            (folder / "logs").mkdir()
            platform = Platform(env=env, port=free_port(), log_dir=folder / "logs")
            try:
                platform.tokens = prepare(env, ("alice", "bob"), code=SETUP, static=True)
                platform.start_daphne()
                platform.start_worker("replies", queues="llama_cpp,default", concurrency=2)
                platform.start_worker("jobs", queues="jobs", pool="threads", concurrency=2)
                yield platform
            finally:
                platform.stop_all()
    finally:
        redis_server.stop()


def signed_in(browser: Browser, platform: Platform, user: str) -> Any:
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    context.set_default_timeout(20_000)
    log_in(context, platform, user).close()
    return context


@pytest.fixture
def staff_page(browser: Browser, distributed: Platform) -> Iterator[Page]:
    context = signed_in(browser, distributed, "bob")
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    yield tab
    context.close()
    assert not errors, f"script errors on the page: {errors}"


def test_a_user_who_is_not_staff_gets_no_workers_page(browser: Browser, distributed: Platform) -> None:
    context = signed_in(browser, distributed, "alice")
    response = context.new_page().goto(f"{distributed.http}/workers/")
    assert response is not None and response.status == 404
    context.close()
    status, _ = api(distributed.http, distributed.tokens["alice"], "GET", "/api/workers/")
    assert status == 403


def test_the_page_shows_each_worker_its_models_its_running_reply_and_a_lost_worker(
    staff_page: Page, distributed: Platform
) -> None:
    page = staff_page
    page.goto(f"{distributed.http}/jobs/")
    page.locator("#workers-link").click()
    page.wait_for_url(f"{distributed.http}/workers/")
    page.wait_for_selector("body[data-ready='1']")
    expect(page.locator("#conn")).to_have_attribute("data-state", "open")

    replies = page.locator("tr.worker[data-worker^='replies-']")
    jobs = page.locator("tr.worker[data-worker^='jobs-']")
    expect(replies.locator(".w-queues .badge")).to_have_text(["llama_cpp", "default"])
    expect(jobs.locator(".w-queues .badge")).to_have_text(["jobs"])
    expect(replies.locator(".w-name")).to_contain_text("prefork × 2")
    expect(jobs.locator(".w-name")).to_contain_text("threads × 2")
    # The prefork worker's main process and its two pool processes, each with its memory.
    expect(replies.locator(".procs li")).to_have_count(3)
    expect(replies.locator(".procs li[data-role='child']")).to_have_count(2)
    expect(page.locator("#stat-workers")).to_have_text("2")

    # Each pool process preloaded the model; unused for the keep-alive, it is shown unloaded.
    unloaded = replies.locator(".model-unloaded")
    expect(unloaded.first).to_be_visible(timeout=(KEEP_ALIVE + 15) * 1000)
    expect(unloaded.first.locator(".reason")).to_have_text("idle")
    expect(unloaded.first.locator(".model-name")).to_have_text(re.compile(r"\.gguf$"))

    # kill -9 of the jobs worker: shown lost within 10 s, the other still online.
    distributed.kill("jobs")
    killed = time.monotonic()
    expect(jobs).to_have_attribute("data-state", "lost", timeout=10_000)
    assert time.monotonic() - killed < 10
    expect(jobs.locator(".pill")).to_have_text("lost")
    expect(replies).to_have_attribute("data-state", "online")
    expect(page.locator("#workers-count")).to_have_text("1 online · 1 lost")

    # A reply streams: its task and its model in use show on the worker that runs it; the one
    # before it is counted as done.
    status, body = api(distributed.http, distributed.tokens["alice"], "POST", "/api/sessions/", {"agent": "assistant"})
    assert status == 201, body
    watcher = Watcher(ws_open(distributed.ws, body["id"], distributed.tokens["alice"]))
    watcher.recv()
    send(watcher.ws, type="message", content="Say hi.")
    first = watcher.first_reply_id()
    watcher.until_done(first)
    expect(page.locator("#stat-done")).to_have_text("1", timeout=5_000)
    send(watcher.ws, type="message", content="Write a very long story about a lighthouse keeper and the sea.")
    event = watcher.until(lambda e: e["type"] == "message" and e["message"]["role"] == "assistant"
                          and e["message"]["id"] != first)  # fmt: skip
    reply_id = int(event["message"]["id"])
    watcher.until(lambda e: e["type"] == "delta" and e["seq"] >= 3)
    task = replies.locator(".w-running .task")
    expect(task.locator(".task-name")).to_have_text("reply_generate", timeout=5_000)
    expect(task).to_contain_text(f"message {reply_id}")
    in_use = replies.locator(".model-loaded", has=page.locator(".pill-running"))
    expect(in_use).to_have_count(1, timeout=5_000)
    expect(in_use.locator(".badge")).to_have_text("llama_cpp")
    expect(page.locator("#stat-tasks")).to_have_text("1")
    page.set_viewport_size({"width": 1440, "height": 560})
    page.wait_for_timeout(2_200)  # one more read, so durations and ages have moved on
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    watcher.until_done(reply_id)
    watcher.close()
    expect(replies.locator(".w-running")).to_have_text("idle", timeout=5_000)
