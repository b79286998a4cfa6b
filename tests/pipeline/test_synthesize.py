"""The synthesize kind without a model: its spec's validation through the API, the agent it may
name, the JSON Schema of one example, and the checks, de-duplication and records of the step,
fed by a scripted generator. A real run on the bundled model is in tests/integration."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from jsonschema import Draft202012Validator
from rest_framework.test import APIClient

from agents.models import Agent
from agents.selectors import agent_for_job
from inference.models import Job, ModelArtifact
from pipeline.jobs import datasets, services
from pipeline.jobs.steps import synthesize as step
from pipeline.jobs.steps.protocol import StepError
from pipeline.jobs.synthesize import SynthesizeParams, run_synthesize

SPEC: dict[str, Any] = {
    "domain": "video meetings",
    "intents": [
        {
            "name": "meeting.start",
            "description": "Start a meeting, maybe in a given room",
            "slots": {"room": {"type": "string", "description": "the room", "examples": ["Aquarium", "Room 4"]}},
            "examples": ["Start the meeting", "Start a meeting in the Aquarium"],
        },
        {
            "name": "meeting.mute",
            "description": "Mute a participant",
            "slots": {
                "participant": {"type": "string", "values": ["Alice", "Bob", "Carol"]},
                "minutes": {"type": "integer", "description": "for how long"},
            },
            "required": ["participant"],
            "examples": ["Mute Bob please"],
        },
    ],
}
TUNE = {"name": "X", "author": "Y"}


pytestmark = pytest.mark.usefixtures("no_dispatch")


def _spec(**changes: Any) -> dict[str, Any]:
    spec = copy.deepcopy(SPEC)
    for path, value in changes.items():  # "intents.0.required": [...]
        *parents, last = path.split(".")
        node: Any = spec
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[int(last) if last.isdigit() else last] = value
    return spec


# ---------------------------------------------------------------- params through the API


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"spec": _spec(**{"intents.0.required": ["floor"]})}, "params.spec.intents.0.required"),
        ({"spec": _spec(**{"intents.1.name": "mute me!"})}, "params.spec.intents.1.name"),
        ({"spec": _spec(**{"intents.1.name": "meeting.start"})}, "params.spec.intents"),
        ({"spec": _spec(intents=[])}, "params.spec.intents"),
        ({"spec": _spec(**{"intents.0.slots.room.type": "date"})}, "params.spec.intents.0.slots.room.type"),
        ({"spec": _spec(**{"intents.1.slots.minutes.values": [5, "ten"]})},
         "params.spec.intents.1.slots.minutes.values"),
        ({"spec": _spec(**{"intents.1.slots.participant.values": []})},
         "params.spec.intents.1.slots.participant.values"),
        ({"spec": _spec(**{"intents.0.slots": {"the room": {}}})}, "params.spec.intents.0.slots"),
        ({"spec": _spec(colour="red")}, "params.spec.colour"),
        ({"spec": _spec(language="English!")}, "params.spec.language"),
        ({}, "params.spec"),
        ({"spec": SPEC, "per_intent": 0}, "params.per_intent"),
        ({"spec": SPEC, "temperature": 3}, "params.temperature"),
        ({"spec": SPEC, "then": [{"kind": "finetune_lora", "params": {"self_cognition": TUNE}}]},
         "params.then.0.kind"),  # it makes a dataset, not a model
    ],
)  # fmt: skip
def test_a_bad_spec_answers_400_naming_the_field(
    staff_api: APIClient, gguf_artifact: ModelArtifact, params: dict, field: str, no_dispatch: list[int]
) -> None:
    answer = staff_api.post("/api/jobs/", {"kind": "synthesize", "params": {"source": gguf_artifact.pk, **params}},
                            format="json")  # fmt: skip
    assert answer.status_code == 400, answer.json()
    assert answer.json()["field"] == field, answer.json()
    assert answer.json()["message"].startswith(f"{field}: ")
    assert no_dispatch == []


def test_a_good_spec_is_queued_with_its_defaults(
    staff_api: APIClient, gguf_artifact: ModelArtifact, no_dispatch: list[int]
) -> None:
    answer = staff_api.post("/api/jobs/", {"kind": "synthesize", "params": {"source": gguf_artifact.pk, "spec": SPEC}},
                            format="json")  # fmt: skip
    assert answer.status_code == 201, answer.json()
    params = answer.json()["params"]
    assert (params["per_intent"], params["max_attempts"], params["temperature"], params["seed"]) == (10, None, 0.9, 0)
    assert params["spec"]["language"] == "en" and params["spec"]["intents"][1]["required"] == ["participant"]
    assert "synthesize" in staff_api.get("/api/jobs/kinds/").json()


def test_the_source_must_be_a_model_it_can_run(staff_api: APIClient, tmp_path: Path) -> None:
    hf = ModelArtifact.objects.create(name="hf", format="hf", path=str(tmp_path))
    answer = staff_api.post("/api/jobs/", {"kind": "synthesize", "params": {"source": hf.pk, "spec": SPEC}},
                            format="json")  # fmt: skip
    assert answer.status_code == 400 and answer.json()["field"] == "params.source"
    neither = staff_api.post("/api/jobs/", {"kind": "synthesize", "params": {"spec": SPEC}}, format="json")
    assert neither.status_code == 400 and neither.json()["field"] == "params.agent"


def test_an_agent_lends_its_model(staff_api: APIClient, agent: Agent, tmp_path: Path) -> None:
    made = staff_api.post("/api/jobs/", {"kind": "synthesize", "params": {"agent": "helper", "spec": SPEC}},
                          format="json")  # fmt: skip
    assert made.status_code == 201, made.json()
    assert made.json()["params"]["source"] == agent.model_id
    assert made.json()["params"]["temperature"] == 0.9  # the job's own, not the agent's 0.7
    # A retry carries both agent and source: the same model, so it is accepted.
    Job.objects.filter(pk=made.json()["id"]).update(status=Job.Status.FAILED)
    assert staff_api.post(f"/api/jobs/{made.json()['id']}/retry/").status_code == 201
    other = ModelArtifact.objects.create(name="other", format="gguf", path=str(tmp_path / "o.gguf"))
    for params, field in [
        ({"agent": "nobody"}, "params.agent"),
        ({"agent": "helper", "source": other.pk}, "params.source"),
    ]:
        refused = staff_api.post("/api/jobs/", {"kind": "synthesize", "params": {**params, "spec": SPEC}},
                                 format="json")  # fmt: skip
        assert refused.status_code == 400 and refused.json()["field"] == field, refused.json()
    Agent.objects.create(name="Remote", slug="remote", backend="openai_compat")
    refused = staff_api.post("/api/jobs/", {"kind": "synthesize", "params": {"agent": "remote", "spec": SPEC}},
                             format="json")  # fmt: skip
    assert refused.status_code == 400 and "no model artifact" in refused.json()["message"]
    served = ModelArtifact.objects.create(name="served", format="served", url="http://localhost:9/v1")
    Agent.objects.create(name="Served", slug="served", backend="openai_compat", model=served)
    refused = staff_api.post("/api/jobs/", {"kind": "synthesize", "params": {"agent": "served", "spec": SPEC}},
                             format="json")  # fmt: skip
    assert refused.status_code == 400 and refused.json()["field"] == "params.agent", refused.json()


def test_a_user_resolves_only_the_agents_they_may_use(user: User, other_user: User, agent: Agent) -> None:
    agent.visibility = Agent.Visibility.RESTRICTED
    agent.save()
    agent.allowed_users.add(user)
    assert agent_for_job("helper", user) == {
        "source": agent.model_id, "name": "Helper", "temperature": 0.7, "top_p": 0.95, "system_prompt": "",
        "backend": "llama_cpp", "backend_options": {},
    }  # fmt: skip
    for who in (other_user, None):
        with pytest.raises(LookupError, match="no agent 'helper'"):
            agent_for_job("helper", who)
    with pytest.raises(services.JobError) as caught:
        services.job_create(kind="synthesize", params={"agent": "helper", "spec": SPEC}, user=other_user)
    assert caught.value.field == "params.agent"


# ---------------------------------------------------------------- the schema of one example


def test_the_schema_of_an_example_follows_the_spec() -> None:
    schema = step.example_schema(SPEC["intents"][1])
    assert list(schema["properties"]) == ["slots", "text"] and schema["additionalProperties"] is False
    slots = schema["properties"]["slots"]
    assert slots["required"] == ["participant"] and slots["additionalProperties"] is False
    assert slots["properties"]["participant"] == {"type": "string", "enum": ["Alice", "Bob", "Carol"]}
    assert slots["properties"]["minutes"] == {"type": "integer"}
    check = Draft202012Validator(schema)
    assert check.is_valid({"slots": {"participant": "Bob", "minutes": 5}, "text": "Mute Bob for 5 minutes"})
    for bad in [
        {"slots": {"participant": "Dave"}, "text": "Mute Dave"},
        {"slots": {}, "text": "Mute everyone"},
        {"slots": {"participant": "Bob", "minutes": "5"}, "text": "Mute Bob"},
        {"slots": {"participant": "Bob", "mood": "calm"}, "text": "Mute Bob"},
        {"slots": {"participant": "Bob"}, "text": "Mute Bob", "extra": 1},
        {"slots": {"participant": "Bob"}, "text": ""},
    ]:
        assert not check.is_valid(bad), bad
    room = step.example_schema(SPEC["intents"][0])["properties"]["slots"]
    assert room["required"] == [] and room["properties"]["room"]["minLength"] == 1


def test_llama_cpp_turns_each_schema_into_a_grammar() -> None:
    grammar = pytest.importorskip("llama_cpp.llama_grammar")
    for intent in SPEC["intents"]:
        gbnf = grammar.json_schema_to_gbnf(json.dumps(step.example_schema(intent)))
        assert '"\\"slots\\""' in gbnf and "root ::=" in gbnf


def test_the_prompt_describes_the_intent_and_shows_annotated_examples() -> None:
    import random

    messages = step.prompt(SPEC, SPEC["intents"][1], random.Random(1))
    text = messages[-1]["content"]
    assert "Domain: video meetings" in text and "meeting.mute" in text
    assert "participant (string; required; one of Alice, Bob, Carol)" in text
    assert '{"slots": {"participant": "Bob"}, "text": "Mute Bob please"}' in text
    assert step.demos(SPEC["intents"][0])[1] == {
        "slots": {"room": "Aquarium"},
        "text": "Start a meeting in the Aquarium",
    }
    assert "meeting.mute: Mute a participant. Slots: participant (string, one of Alice, Bob, Carol, required)" in (
        step.default_instruction(SPEC)
    )


# ---------------------------------------------------------------- checks and de-duplication


class Scripted:
    """Answers from a list, in turn; records the seed of each call."""

    engine, constrained = "scripted", "none"

    def __init__(self, answers: list[Any]) -> None:
        self.answers = list(answers)
        self.seeds: list[int] = []

    def __call__(self, messages: list[dict[str, str]], schema: dict[str, Any], seed: int) -> tuple[str, str]:
        self.seeds.append(seed)
        answer = self.answers.pop(0)
        if isinstance(answer, tuple):
            return answer
        return (answer if isinstance(answer, str) else json.dumps(answer)), "stop"

    def close(self) -> None:
        pass


def ex(text: str, **slots: Any) -> dict[str, Any]:
    return {"slots": slots, "text": text}


def test_examples_are_checked_and_de_duplicated(monkeypatch: pytest.MonkeyPatch) -> None:
    reported: list[tuple[float, str, dict]] = []
    monkeypatch.setattr(step, "progress", lambda pct, stage, metrics: reported.append((pct, stage, metrics)))
    gen = Scripted([
        # meeting.start: 2 wanted
        ex("Open the meeting with Bob in room 4", room="Room 4"),  # valid (case-insensitive)
        ex("start the meeting."),  # a copy of an example
        ex("Open the call in the Aquarium"),  # names a room but leaves the slot out
        ex("open the meeting with bob in  room 4!", room="Room 4"),  # a duplicate (punctuation, case, spaces)
        ('{"slots": {}, "text": "Open the', "length"),  # cut off
        ex("Kick off the meeting in the lobby", room="Lobby"),  # valid
        # meeting.mute: 2 wanted, 6 attempts at most
        ex("Silence Carol", participant="Bob"),  # the value is not in the text
        ex("Silence everyone", participant="Dave"),  # not in the enum
        "Sure! Here it is: " + json.dumps(ex("Please silence Carol", participant="Carol")),  # valid, found in words
        ex("Open the meeting with Bob in room 4", participant="Bob"),  # a duplicate of the other intent's
        "no JSON here",
        ex("Mute Alice for 5 minutes", participant="Alice", minutes=5),  # valid
    ])  # fmt: skip
    records, stats = step.examples_generate(SPEC, gen, per_intent=2, max_attempts=6, seed=7)
    assert [r["messages"][1]["content"] for r in records] == [
        "Open the meeting with Bob in room 4", "Kick off the meeting in the lobby", "Please silence Carol",
        "Mute Alice for 5 minutes",
    ]  # fmt: skip
    assert (stats["valid"], stats["rejected"], stats["duplicates"], stats["attempts"]) == (4, 6, 2, 12)
    assert stats["rejections"] == {"slot_not_in_text": 1, "copies_example": 1, "slot_missed": 1, "truncated": 1,
                                   "schema": 1, "not_json": 1}  # fmt: skip
    assert stats["per_intent"]["meeting.start"] == {"valid": 2, "rejected": 3, "duplicates": 1, "attempts": 6}
    assert len(set(gen.seeds)) == 12, "each attempt has its own seed"
    assert reported[0] == (25.0, "meeting.start: 1/2 valid, 0 rejected, 0 duplicates",
                           {"valid": 1, "rejected": 0, "duplicates": 0, "attempts": 1})  # fmt: skip
    assert reported[-1] == (100.0, "meeting.mute: 2/2 valid, 3 rejected, 1 duplicate",
                            {"valid": 4, "rejected": 6, "duplicates": 2, "attempts": 12})  # fmt: skip
    last = records[-1]
    assert json.loads(last["messages"][2]["content"]) == {"intent": "meeting.mute",
                                                          "slots": {"participant": "Alice", "minutes": 5}}  # fmt: skip
    assert last["messages"][0]["content"] == step.default_instruction(SPEC)
    assert (last["intent"], last["slots"]) == ("meeting.mute", {"participant": "Alice", "minutes": 5})
    assert [datasets.record_normalize(r) for r in records] == records


def test_an_intent_stops_at_its_attempts_and_only_no_example_at_all_fails(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(step, "progress", lambda *a, **k: None)
    spec = {**SPEC, "instruction": "Parse the request."}
    answers = [ex("Open the meeting", room="Aquarium")] * 3 + [ex("Mute Carol now", participant="Carol")] * 3
    monkeypatch.setattr(step, "Generator", lambda fmt, path, **kw: Scripted(answers))
    params = {"format": "gguf", "path": "m.gguf", "spec": spec, "output": str(tmp_path / "d.jsonl"),
              "per_intent": 3, "max_attempts": 3}  # fmt: skip
    result = step.synthesize(params)
    assert (result["valid"], result["duplicates"], result["empty_intents"]) == (1, 2, ["meeting.start"])
    assert result["short_intents"] == ["meeting.start", "meeting.mute"]
    rows = datasets.records_read(tmp_path / "d.jsonl")
    assert len(rows) == result["records"] == 1 and rows[0]["messages"][0]["content"] == "Parse the request."
    monkeypatch.setattr(step, "Generator", lambda fmt, path, **kw: Scripted(["{}"] * 6))
    with pytest.raises(StepError, match="no valid example in 6 attempts"):
        step.synthesize({**params, "output": str(tmp_path / "none.jsonl")})
    assert not (tmp_path / "none.jsonl").exists()


def test_the_job_passes_the_spec_in_a_file_and_reports_the_counts(tmp_path: Path) -> None:
    class Ctx:
        workdir = tmp_path / "work"
        source = ModelArtifact(pk=3, name="m", format="gguf", path="/models/m.gguf")
        logged: list[str] = []

        def step(self, name: str, params: dict[str, Any], *, span: tuple[float, float]) -> dict[str, Any]:
            self.params = params
            return {"records": 4, "valid": 4, "rejected": 2, "duplicates": 1, "per_intent": {}, "rejections": {},
                    "empty_intents": [], "engine": "llama.cpp", "constrained": "json_schema",
                    "peak_rss_mb": 9}  # fmt: skip

        def log(self, line: str) -> None:
            self.logged.append(line)

    ctx = Ctx()
    p = SynthesizeParams.model_validate({"source": 3, "spec": SPEC, "per_intent": 2})
    [out] = run_synthesize(ctx, p)  # type: ignore[arg-type]
    assert (out.relpath, out.format, out.label) == ("dataset.jsonl", "dataset", "dataset: 4 examples")
    assert (out.details["valid"], out.details["rejected"], out.details["duplicates"]) == (4, 2, 1)
    assert out.details["intents"] == ["meeting.start", "meeting.mute"] and "peak_rss_mb" not in out.details
    assert ctx.params["max_attempts"] == 8 and ctx.params["output"] == str(ctx.workdir / "dataset.jsonl")
    assert json.loads(Path(ctx.params["spec_file"]).read_text())["intents"][1]["required"] == ["participant"]
