"""A benchmark job on the real stack: started through the REST API for the bundled agent, run by
a Celery worker on the `jobs` queue, measuring the llama.cpp engine in process and its own server
and the platform's /v1 and websocket (served by the real daphne and llama.cpp worker) at two
concurrency levels. What a user reads must be there and agree: every request answered, the same
prompt and output lengths on every side, the files served, the table in the log."""

from __future__ import annotations

import csv
import io
import json
import urllib.request
from typing import Any

import pytest

from tests.integration.chat_client import api
from tests.integration.conftest import jobs_worker_running
from tests.integration.services import wait_until
from tests.integration.test_jobs import STAFF
from tests.platform_shell import shell_run
from tools.launch import Platform

pytestmark = pytest.mark.slow

PARAMS = {"agent": "assistant", "concurrency": [1, 2], "requests": 3, "input_tokens": 64, "output_tokens": 12,
          "compare_raw": True}  # fmt: skip


@pytest.fixture(scope="module")
def ops(platform: Platform, jobs_worker: str) -> str:
    """A staff token; the run's worker on the `jobs` queue (conftest) runs the job. It reaches /v1
    and the websocket at PLATFORM_URL, which the package's platform sets to its daphne."""
    assert platform.env["PLATFORM_URL"] == platform.http
    jobs_worker_running(platform)
    return str(json.loads(shell_run(platform, STAFF).strip().splitlines()[-1]))


def call(platform: Platform, token: str, method: str, path: str, body: Any = None) -> Any:
    status, answer = api(platform.http, token, method, path, body)
    assert status in (200, 201), (status, answer)
    return answer


def test_a_benchmark_job_measures_the_doors_and_the_raw_engine_side_by_side(platform: Platform, ops: str) -> None:
    tokens_before = len(call(platform, ops, "GET", "/api/tokens/"))
    started = call(platform, ops, "POST", "/api/jobs/", {"kind": "benchmark", "params": PARAMS})
    assert started["params"]["source"]  # the agent's model
    job: dict[str, Any] = {}

    def done() -> bool:
        job.update(call(platform, ops, "GET", f"/api/jobs/{started['id']}/"))
        return job["status"] not in ("queued", "running")

    wait_until(done, 600, "the benchmark job to end", every=1.0)

    def get(path: str) -> bytes:
        request = urllib.request.Request(f"{platform.http}/api/jobs/{job['id']}/{path}",
                                         headers={"Authorization": f"Token {ops}"})  # fmt: skip
        with urllib.request.urlopen(request, timeout=30) as response:
            return bytes(response.read())

    def file(name: str) -> bytes:
        return get(f"files/{name}")

    log_text = get("log/").decode()
    assert job["status"] == "succeeded", (job["error"], log_text[-3000:])

    result = json.loads(file("bench.json"))
    runs = {(r["target"], r["concurrency"]): r for r in result["runs"]}
    # The engine in process serves one request at a time: measured at 1 only.
    assert set(runs) == {("raw_inprocess", 1), ("raw_server", 1), ("raw_server", 2), ("v1", 1), ("v1", 2),
                         ("websocket", 1), ("websocket", 2)}  # fmt: skip
    for run in runs.values():
        assert run["completed"] == PARAMS["requests"] and run["failed"] == 0, run
        assert run["ttft_ms"]["p50"] > 0 and run["e2e_ms"]["p50"] >= run["ttft_ms"]["p50"]
        assert run["output_tps"] > 0 and run["request_throughput"] > 0
    # Each target its own prompts of the same length (the template included, counted alike on
    # every side), and every reply as long as asked.
    sizes = [r["input_tokens_mean"] for r in runs.values()]
    assert max(sizes) - min(sizes) <= 4, {k: r["input_tokens_mean"] for k, r in runs.items()}
    assert {r["output_tokens_mean"] for r in runs.values()} == {PARAMS["output_tokens"]}
    assert 40 <= runs[("v1", 1)]["input_tokens_mean"] <= 64 + 40
    compared = {(c["door"], c["concurrency"]): c for c in result["comparisons"]}
    assert set(compared) == {("v1", 1), ("v1", 2), ("websocket", 1), ("websocket", 2)}
    assert compared[("v1", 1)]["raw"] == "raw_server"
    assert set(compared[("v1", 1)]["met"]) == {"ttft_added_ms_p50", "decode_ratio", "e2e_tps_ratio"}
    assert result["machine"]["cores"] >= 1 and result["machine"]["memory_bandwidth_gbs"] > 0
    assert result["machine"]["llama_cpu_variant"]
    rows = list(csv.DictReader(io.StringIO(file("bench.csv").decode())))
    assert len(rows) == len(runs) and rows[0]["ttft_ms.p50"]
    for picture in ("throughput.png", "ttft.png"):
        assert file(picture).startswith(b"\x89PNG")
    assert "platform /v1" in log_text and "TTFT" in log_text  # the table, in the job's log
    assert "CHATSITE_BENCH_TOKEN" not in log_text and "cs_" not in log_text  # the token is not logged
    # The job's token is revoked when it ends: the user's live tokens are as before.
    assert len(call(platform, ops, "GET", "/api/tokens/")) == tokens_before
