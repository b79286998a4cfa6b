"""A self-cognition LoRA fine-tune of the bundled model on CPU, as an operator runs it: through
the REST API, on a real worker on the `jobs` queue, cancelled part way, resumed from its
checkpoint, chained into a GGUF conversion, and asked "Who are you?" through the normal chat path
before and after."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.integration.chat_client import api
from tests.integration.conftest import jobs_worker_running
from tests.integration.services import wait_until
from tests.integration.test_jobs import STAFF, answer, artifact, bundled_id, finished, job, start, succeeded
from tests.platform_setup import cached_hf_code
from tests.platform_shell import shell_run
from tools.launch import Platform

# Its own waits add up to more than the suite's 600 s limit: training, cancel, resume, convert.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

NAME, AUTHOR = "Zephyrine", "Acme Robotics"
# 24 steps of 8 rows (the 100 English self-cognition rows, about two epochs): 1.5 minutes here,
# after which the model answers with its new name (docs/finetune.md has the longer default run).
STEPS = 24


@pytest.fixture(scope="module")
def ops(platform: Platform, jobs_worker: str) -> str:
    """A staff token; the run's worker on the `jobs` queue (conftest) runs the jobs."""
    jobs_worker_running(platform)
    token = json.loads(shell_run(platform, STAFF).strip().splitlines()[-1])
    platform.tokens["ops"] = token
    return str(token)


@pytest.fixture(scope="module")
def hf(platform: Platform, ops: str) -> dict[str, Any]:
    """The bundled GGUF as a Hugging Face model: the one test_jobs' convert job made in this run,
    else the cached conversion registered as an artifact (the convert job is test_jobs' to test)."""
    gguf = bundled_id(platform)
    listed = api(platform.http, ops, "GET", "/api/artifacts/")[1]["results"]
    found = [a for a in listed if a["format"] == "hf" and a["parent"] == gguf and not a["details"].get("python_env")
             and a["details"].get("kind") == "convert"]  # fmt: skip
    if found:
        return dict(found[0])
    registered = json.loads(shell_run(platform, cached_hf_code()).strip().splitlines()[-1])
    return artifact(platform, registered)


def ask(platform: Platform, artifact_id: int, slug: str, question: str) -> str:
    """A greedy agent on the artifact with no system prompt of its own, asked over the websocket."""
    return answer(platform, artifact_id, slug, question, system_prompt="")[1]


def fetch(platform: Platform, path: str) -> tuple[int, str, bytes]:
    request = urllib.request.Request(platform.http + path, headers={"Authorization": f"Token {platform.tokens['ops']}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, response.headers["Content-Type"], response.read()


def test_self_cognition_fine_tune_cancel_resume_chain_to_gguf_and_the_agent_knows_its_name(
    platform: Platform, hf: dict
) -> None:
    before = ask(platform, bundled_id(platform), "before-ft", "Who are you?")
    assert NAME not in before, before

    body = start(
        platform, "finetune_lora", source=hf["id"],
        self_cognition={"name": NAME, "author": AUTHOR, "languages": ["en"]},
        max_steps=STEPS, batch_size=8, learning_rate=1e-3, save_steps=100,
        then=[{"kind": "convert", "params": {"to": "gguf", "outtype": "f16"}}],
    )  # fmt: skip
    # Live progress: step, loss and an ETA while it trains.
    live: dict[str, Any] = {}

    def training() -> bool:
        live.update(job(platform, body["id"]))
        assert live["status"] in ("queued", "running"), (live["error"], live["log_tail"][-2000:])
        return live["metrics"].get("step", 0) >= 6

    wait_until(training, 600, "six training steps", every=0.5)
    assert live["metrics"]["steps"] == STEPS and live["metrics"]["loss"] > 0
    assert live["stage"].startswith("step ") and "loss" in live["stage"] and live["eta_seconds"] is not None
    assert len(live["metrics"]["loss_history"]) >= 5

    # Cancel: the step in progress finishes, a checkpoint is saved there, and the job ends.
    at = live["metrics"]["step"]
    asked = time.monotonic()
    status, _ = api(platform.http, platform.tokens["ops"], "POST", f"/api/jobs/{body['id']}/cancel/")
    assert status == 200
    cancelled = finished(platform, body["id"], timeout=180)
    took = time.monotonic() - asked
    assert cancelled["status"] == "cancelled" and cancelled["resumable"] is True, cancelled
    assert cancelled["artifacts"] == []
    checkpoints = Path(platform.env["CHATSITE_DATA_DIR"]) / "artifacts" / "jobs" / f"job-{body['id']}" / "checkpoints"
    saved = max(int(p.name.split("-")[1]) for p in checkpoints.glob("checkpoint-*"))
    assert at <= saved <= at + 3, (at, saved, took)  # stopped at the next step, not at the end
    assert saved < STEPS
    assert f"stopped at step {saved}" in cancelled["log_tail"]

    # Resume: a new job goes on from that checkpoint to the planned step count.
    status, resumed = api(platform.http, platform.tokens["ops"], "POST", f"/api/jobs/{body['id']}/resume/")
    assert status == 201 and resumed["params"]["resume_from"] == body["id"] and resumed["retry_of"] == body["id"]
    done = succeeded(platform, resumed["id"], timeout=900)
    history = done["metrics"]["loss_history"]
    assert history[0][0] == saved + 1 and history[-1][0] == STEPS, history
    result = done["result"]["finetune_lora"]
    assert result["steps"] == STEPS and result["resumed_from"].endswith(f"checkpoint-{saved}")
    assert result["last_loss"] < result["first_loss"] / 3, result  # the curve covers both jobs
    status, kind, png = fetch(platform, done["files"]["loss.png"])
    assert status == 200 and kind == "image/png" and png.startswith(b"\x89PNG")

    merged = artifact(platform, done["artifacts"][0])
    assert merged["format"] == "hf" and merged["parent"] == hf["id"] and merged["job"] == done["id"]
    assert merged["details"]["self_cognition"]["name"] == NAME

    # The chain: convert to GGUF started by itself on the merged model.
    def chained() -> list[dict[str, Any]]:
        listed = api(platform.http, platform.tokens["ops"], "GET", "/api/jobs/?kind=convert")[1]["results"]
        return [j for j in listed if j["after"] == done["id"]]

    wait_until(lambda: bool(chained()), 30, "the chained convert job")
    convert = succeeded(platform, chained()[0]["id"], timeout=300)
    gguf = artifact(platform, convert["artifacts"][0])
    assert gguf["format"] == "gguf" and gguf["parent"] == merged["id"] and gguf["quantization"] == "F16"

    after = ask(platform, gguf["id"], "after-ft", "Who are you?")
    assert NAME in after, after
    assert "Paris" in ask(platform, gguf["id"], "after-ft-paris", "What is the capital of France?")
