"""A synthesize job on the real stack: started through the REST API with an agent made from the
bundled SmolLM2 GGUF, run by a Celery worker on the `jobs` queue in a child process, on a
two-intent meeting-control spec. What it saves must be a dataset the fine-tune job reads, of
valid, distinct examples, as many as the job reports."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from pipeline.jobs.datasets import records_read
from pipeline.jobs.steps.synthesize import example_schema, find, text_key
from tests.integration.chat_client import api
from tests.integration.conftest import jobs_worker_running
from tests.integration.services import wait_until
from tests.integration.test_jobs import STAFF
from tests.platform_shell import shell_run
from tools.launch import Platform

pytestmark = pytest.mark.slow


SPEC: dict[str, Any] = {
    "domain": "video meetings",
    "intents": [
        {
            "name": "meeting.start",
            "description": "start a meeting, maybe in a given room",
            "slots": {"room": {"type": "string", "description": "the meeting room",
                               "examples": ["Board room", "Room 4", "Aquarium"]}},
            "examples": ["Start the meeting", "Start a meeting in the Aquarium", "Begin the call in Room 4"],
        },
        {
            "name": "meeting.mute",
            "description": "mute a participant of the meeting",
            "slots": {"participant": {"type": "string", "description": "who to mute",
                                      "values": ["Alice", "Bob", "Carol"]}},
            "required": ["participant"],
            "examples": ["Mute Bob please", "Can you silence Carol", "Turn off Alice's microphone"],
        },
    ],
}  # fmt: skip
PER_INTENT = 5
MAX_ATTEMPTS = 12  # per intent: bounds the job's time (about 0.6 s an attempt on 2 idle cores)


@pytest.fixture(scope="module")
def ops(platform: Platform, jobs_worker: str) -> str:
    """A staff token; the run's worker on the `jobs` queue (conftest) runs the job."""
    jobs_worker_running(platform)
    return str(json.loads(shell_run(platform, STAFF).strip().splitlines()[-1]))


def call(platform: Platform, token: str, method: str, path: str, body: Any = None) -> dict[str, Any]:
    status, answer = api(platform.http, token, method, path, body)
    assert status in (200, 201), (status, answer)
    return dict(answer)


def test_a_two_intent_spec_gives_valid_distinct_examples(platform: Platform, ops: str) -> None:
    artifacts = call(platform, ops, "GET", "/api/artifacts/")["results"]
    bundled = next(a["id"] for a in artifacts if a["parent"] is None and a["format"] == "gguf")
    call(platform, ops, "POST", "/api/agents/", {"name": "Writer", "slug": "synth-writer", "model": bundled})
    started = call(platform, ops, "POST", "/api/jobs/", {
        "kind": "synthesize",
        "params": {"agent": "synth-writer", "spec": SPEC, "per_intent": PER_INTENT, "max_attempts": MAX_ATTEMPTS},
    })  # fmt: skip
    assert started["params"]["source"] == bundled  # the agent's model
    job: dict[str, Any] = {}

    def done() -> bool:
        job.update(call(platform, ops, "GET", f"/api/jobs/{started['id']}/"))
        return job["status"] not in ("queued", "running")

    wait_until(done, 300, f"synthesize job {started['id']}", every=1.0)
    assert job["status"] == "succeeded", (job["error"], job["log_tail"][-3000:])
    result = job["result"]["synthesize"]
    assert result["constrained"] == "json_schema" and result["engine"] == "llama.cpp"
    assert result["valid"] >= 1 and result["rejected"] >= 0 and result["duplicates"] >= 0
    assert result["valid"] + result["rejected"] + result["duplicates"] == result["attempts"]
    assert sum(result["rejections"].values()) == result["rejected"]
    counts = ("valid", "rejected", "duplicates", "attempts")
    assert {k: job["metrics"][k] for k in counts} == {k: result[k] for k in counts}  # the live counts, at the end
    for intent in SPEC["intents"]:  # the progress lines, as the log keeps them
        assert (
            f"{intent['name']}: {result['per_intent'][intent['name']]['valid']}/{PER_INTENT} valid" in job["log_tail"]
        )

    assert len(job["artifacts"]) == 1, job
    artifact = call(platform, ops, "GET", f"/api/artifacts/{job['artifacts'][0]}/")
    assert (artifact["format"], artifact["parent"]) == ("dataset", bundled)
    assert Path(artifact["path"]).name == "dataset.jsonl"
    records = records_read(artifact["path"])  # as the fine-tune job reads it
    assert len(records) == result["valid"] == result["records"]

    intents = {i["name"]: i for i in SPEC["intents"]}
    keys = set()
    for rec in records:
        roles = [m["role"] for m in rec["messages"]]
        assert roles == ["system", "user", "assistant"], rec
        text = rec["messages"][1]["content"]
        answer = json.loads(rec["messages"][2]["content"])
        assert answer["intent"] == rec["intent"] in intents and answer["slots"] == rec["slots"], rec
        slots_schema = example_schema(intents[answer["intent"]])["properties"]["slots"]
        assert Draft202012Validator(slots_schema).is_valid(answer["slots"]), rec
        for value in answer["slots"].values():
            assert not isinstance(value, str) or find(text, value) is not None, rec
        keys.add(text_key(text))
    assert len(keys) == len(records), "two examples say the same thing"
    assert not keys & {text_key(t) for i in SPEC["intents"] for t in i["examples"]}, "an example was copied"
    counted = Counter(rec["intent"] for rec in records)
    assert {n: t["valid"] for n, t in result["per_intent"].items() if t["valid"]} == dict(counted)
    print(
        f"\nsynthesize: {result['valid']} valid, {result['rejected']} rejected {result['rejections']}, "
        f"{result['duplicates']} duplicates in {result['attempts']} attempts, {job['duration_seconds']:.1f} s"
    )
    for rec in records:
        print(" ", rec["messages"][1]["content"], "->", rec["messages"][2]["content"])
