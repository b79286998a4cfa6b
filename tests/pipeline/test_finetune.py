"""The fine-tune kind's rules without training: its params, its data sources, chains, resume,
the JSONL upload, and how the loss is masked to the assistant's tokens.

The real training runs in tests/integration/test_finetune.py (the bundled model on CPU)."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from agents.models import Agent
from inference.models import Job, ModelArtifact
from pipeline.jobs import datasets, finetune, runner, services
from pipeline.jobs.steps.finetune import encode
from sessions_app.models import Message, Session
from tests.conftest import PIPELINE_PERMISSIONS, grant

SC = {"name": "Zephyrine", "author": "Acme Robotics"}


pytestmark = pytest.mark.usefixtures("no_dispatch")


@pytest.fixture
def hf(hf_artifact: ModelArtifact) -> ModelArtifact:
    return hf_artifact


@pytest.fixture
def staff(db: Any) -> User:
    return grant(User.objects.create_user("ops", password="x", is_staff=True), *PIPELINE_PERMISSIONS)


def create(hf: ModelArtifact, user: Any = None, **params: Any) -> Job:
    return services.job_create(kind="finetune_lora", params={"source": hf.pk, **params}, user=user)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({}, "params"),  # no training data at all
        ({"self_cognition": {"name": ""}}, "params.self_cognition.name"),
        ({"self_cognition": {**SC, "languages": ["fr"]}}, "params.self_cognition.languages.0"),
        ({"self_cognition": SC, "rank": 0}, "params.rank"),
        ({"self_cognition": SC, "learning_rate": 0}, "params.learning_rate"),
        ({"self_cognition": SC, "dropout": 1}, "params.dropout"),
        ({"self_cognition": SC, "target_modules": ["q_proj; rm -rf"]}, "params.target_modules"),
        ({"self_cognition": SC, "batch_size": 0}, "params.batch_size"),
        ({"self_cognition": SC, "device": "tpu"}, "params.device"),
        ({"datasets": [424242]}, "params.datasets.0"),
        ({"self_cognition": SC, "resume_from": 424242}, "params.resume_from"),
        ({"self_cognition": SC, "then": [{"kind": "quantize_gguf"}]}, "params.then.0.kind"),  # HF is not a GGUF
        ({"self_cognition": SC, "then": [{"kind": "convert", "params": {"to": "hf"}}]}, "params.then.0.params"),
        ({"self_cognition": SC, "then": [{"kind": "convert", "params": {"to": "gguf", "outtype": "q2"}}]},
         "params.then.0.params.outtype"),
        ({"self_cognition": SC, "then": [{"kind": "convert", "params": {"to": "gguf", "source": 1}}]},
         "params.then.0.params.source"),
        ({"self_cognition": SC, "then": [{"kind": "evaluate"}, {"kind": "convert", "params": {"to": "gguf"}}]},
         "params.then.1.kind"),  # evaluate makes no artifact to go on with
        ({"self_cognition": SC, "then": [{"kind": "melt"}]}, "params.then.0.kind"),
    ],
)  # fmt: skip
def test_a_bad_parameter_is_refused_naming_it(hf: ModelArtifact, params: dict, field: str, no_dispatch: list) -> None:
    with pytest.raises(services.JobError) as caught:
        create(hf, **params)
    assert caught.value.field == field, caught.value.message
    assert Job.objects.count() == 0 and no_dispatch == []


def test_defaults_and_a_chain_are_stored_and_cuda_goes_to_the_gpu_queue(hf: ModelArtifact, settings: Any) -> None:
    then = [{"kind": "convert", "params": {"to": "gguf"}}, {"kind": "quantize_gguf", "params": {"type": "Q8_0"}}]
    job = create(hf, self_cognition=SC, then=then)
    assert job.params["rank"] == 16 and job.params["learning_rate"] == 1e-3 and job.params["epochs"] == 3
    assert job.params["then"] == then and job.queue == "jobs"
    assert job.params["self_cognition"]["languages"] == ["en", "zh"]
    assert create(hf, self_cognition=SC, device="cuda").queue == settings.JOB_GPU_QUEUE


def test_self_cognition_rows_are_filled_in_both_languages() -> None:
    rows = datasets.self_cognition_records("Zephyrine", "Acme", name_zh="泽菲", tags=("en", "zh"))
    text = json.dumps(rows, ensure_ascii=False)
    assert "{{NAME}}" not in text and "{{AUTHOR}}" not in text
    tags = {r["tag"] for r in rows}
    assert tags == {"en", "zh"}
    assert any("泽菲" in r["messages"][-1]["content"] for r in rows if r["tag"] == "zh")
    assert all("泽菲" not in r["messages"][-1]["content"] for r in rows if r["tag"] == "en")
    queries = {r["messages"][-2]["content"] for r in rows}
    assert len(queries) >= 60  # many phrasings of who / who made you / what can you do
    # Each row once bare (the template's default system message) and once under a system prompt.
    assert sum(1 for r in rows if r["messages"][0]["role"] == "system") == len(rows) // 2
    for row in rows:
        datasets.record_normalize(row)


def test_a_jsonl_upload_is_checked_line_by_line(staff: User) -> None:
    client = APIClient()
    client.force_authenticate(staff)
    good = [
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]},
        {"query": "Who are you?", "response": "I am Zephyrine.", "tag": "en"},
        {"prompt": "2+2?", "chosen": "4", "rejected": "5"},
    ]
    body = "\n".join(json.dumps(r) for r in good) + "\n\n"
    up = io.BytesIO(body.encode())
    up.name = "chats.jsonl"
    response = client.post("/api/datasets/", {"file": up, "name": "my chats"}, format="multipart")
    assert response.status_code == 201, response.content
    made = ModelArtifact.objects.get(pk=response.json()["id"])
    assert (made.format, made.name, made.details["records"]) == ("dataset", "my chats", 3)
    learned = [r["messages"][-1]["content"] for r in datasets.records_read(made.path)]
    assert learned == ["Hello!", "I am Zephyrine.", "4"]

    bad_lines = [
        ('{"messages": [{"role": "user", "content": "Hi"}]}', "the last message must be the assistant's"),
        ('{"messages": [{"role": "robot", "content": "Hi"}, {"role": "assistant", "content": "x"}]}',
         "messages[0].role must be one of"),
        ('{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": ""}]}',
         "messages[1].content must be a non-empty string"),
        ("{not json", "not valid JSON"),
        ('["a list"]', "expected a JSON object"),
        ('{"text": "no chat here"}', 'expected "messages"'),
    ]  # fmt: skip
    for line, message in bad_lines:
        before = ModelArtifact.objects.count()
        up = io.BytesIO((json.dumps(good[0]) + "\n" + json.dumps(good[1]) + "\n" + line + "\n").encode())
        up.name = "bad.jsonl"
        response = client.post("/api/datasets/", {"file": up}, format="multipart")
        assert response.status_code == 400, response.content
        assert response.json()["line"] == 3 and response.json()["field"] == "file"
        assert response.json()["message"].startswith("file: line 3: ") and message in response.json()["message"]
        assert ModelArtifact.objects.count() == before
    assert client.post("/api/datasets/", {}, format="multipart").status_code == 400
    user = User.objects.create_user("alice")
    client.force_authenticate(user)
    assert client.post("/api/datasets/", {"file": io.BytesIO(b"{}")}, format="multipart").status_code == 403


def _session(owner: User, agent: Agent, turns: list[tuple[str, str]]) -> Session:
    session = Session.objects.create(owner=owner, agent=agent)
    for role, content in turns:
        Message.objects.create(session=session, role=role, content=content, status="complete",
                               agent=agent if role == "assistant" else None)  # fmt: skip
    return session


def test_picked_sessions_are_snapshotted_into_a_dataset_owner_checked(hf: ModelArtifact, staff: User) -> None:
    agent = Agent.objects.create(name="Helper", slug="helper", system_prompt="Be brief.")
    mine = _session(staff, agent, [("user", "Hi"), ("assistant", "Hello!"), ("user", "Bye"),
                                   ("assistant", "Bye!"), ("user", "unanswered")])  # fmt: skip
    other = _session(User.objects.create_user("bob"), agent, [("user", "secret"), ("assistant", "ok")])
    job = create(hf, staff, sessions=[mine.pk])
    assert job.params["sessions"] == [] and len(job.params["datasets"]) == 1
    snapshot = ModelArtifact.objects.get(pk=job.params["datasets"][0])
    assert snapshot.format == "dataset" and snapshot.details["value"] == [mine.pk]
    (record,) = datasets.records_read(snapshot.path)
    assert record["messages"] == [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": "Bye!"},
    ]  # fmt: skip
    # Another user's session answers as if it did not exist, and nothing is stored.
    before = ModelArtifact.objects.count()
    with pytest.raises(services.JobError) as caught:
        create(hf, staff, sessions=[other.pk])
    assert caught.value.field == "params.sessions" and f"no session with id {other.pk}" in caught.value.message
    with pytest.raises(services.JobError) as caught:
        create(hf, staff, preferences=True)
    assert caught.value.field == "params.preferences" and "picked no reply" in caught.value.message
    assert ModelArtifact.objects.count() == before


def test_resume_needs_an_ended_job_with_a_checkpoint(hf: ModelArtifact) -> None:
    job = create(hf, self_cognition=SC)
    with pytest.raises(services.JobError) as caught:
        services.job_resume(job)
    assert caught.value.status == 409  # still queued
    Job.objects.filter(pk=job.pk).update(status=Job.Status.CANCELLED)
    job.refresh_from_db()
    with pytest.raises(services.JobError) as caught:
        services.job_resume(job)
    assert caught.value.field == "params.resume_from" and "no checkpoint" in caught.value.message
    (finetune.job_files_dir(job.pk) / "checkpoints" / "checkpoint-7").mkdir(parents=True)
    (finetune.job_files_dir(job.pk) / "checkpoints" / "checkpoint-12").mkdir(parents=True)
    assert finetune.last_checkpoint(job.pk).name == "checkpoint-12"
    resumed = services.job_resume(job)
    assert resumed.params["resume_from"] == job.pk and resumed.retry_of == job
    Job.objects.filter(pk=resumed.pk).update(status=Job.Status.SUCCEEDED)
    resumed.refresh_from_db()
    with pytest.raises(services.JobError) as caught:
        services.job_resume(resumed)
    assert caught.value.status == 409
    other = services.job_create(kind="quantize_rtn", params={"source": hf.pk})
    Job.objects.filter(pk=other.pk).update(status=Job.Status.FAILED)
    other.refresh_from_db()
    with pytest.raises(services.JobError) as caught:
        services.job_resume(other)
    assert caught.value.code == "not_resumable"


def test_a_successful_job_starts_the_next_of_its_chain_on_its_artifact(
    hf: ModelArtifact, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.jobs import kinds

    def run(ctx: runner.JobContext, params: Any) -> list[kinds.Output]:
        (ctx.workdir / "model").mkdir(parents=True)
        (ctx.workdir / "model" / "config.json").write_text("{}")
        ctx.metrics_update({"step": 1, "steps": 2, "loss": 2.5})
        ctx.metrics_update({"step": 2, "steps": 2, "loss": 1.5})
        return [kinds.Output("model", "hf", "f32", "merged")]

    fake = kinds.Kind("finetune_lora", finetune.FinetuneParams, ("hf",), run, "test", makes=lambda p: "hf",
                      prepare=finetune.FINETUNE.prepare)  # fmt: skip
    monkeypatch.setitem(kinds.KINDS, "finetune_lora", fake)
    then = [{"kind": "convert", "params": {"to": "gguf"}}, {"kind": "quantize_gguf", "params": {"type": "Q8_0"}}]
    job = create(hf, self_cognition=SC, then=then)
    assert runner.job_run(job.pk) is True
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    assert job.metrics["loss_history"] == [[1, 2.5], [2, 1.5]] and job.metrics["loss"] == 1.5
    nxt = Job.objects.get(after=job)
    made = job.artifacts.get()
    assert (nxt.kind, nxt.params["source"], nxt.params["to"], nxt.params["then"]) == ("convert", made.pk, "gguf",
                                                                                       then[1:])  # fmt: skip


def _chatml_tokenizer() -> Any:
    """A tiny byte-level BPE tokenizer with a ChatML template (what SmolLM2's template renders)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    special = ["<|im_start|>", "<|im_end|>", "<pad>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = ["system user assistant Be brief. Hi Hello there! Who are you? I am Zephyrine.\n"] * 5
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=special, initial_alphabet=alphabet)
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<pad>")
    fast.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    return fast


def test_the_loss_is_on_the_assistant_turns_and_their_end_token_only() -> None:
    tok = _chatml_tokenizer()
    messages = [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello there!"}, {"role": "user", "content": "Who are you?"},
        {"role": "assistant", "content": "I am Zephyrine."},
    ]  # fmt: skip
    item = encode(tok, messages, max_length=512)
    assert item is not None and len(item["input_ids"]) == len(item["labels"])
    learned = tok.decode([t for t in item["labels"] if t != -100])
    assert learned == "Hello there!<|im_end|>\nI am Zephyrine.<|im_end|>\n"
    assert "Who are you" not in learned and "Be brief" not in learned
    # Cut before the first answer: nothing to learn.
    assert encode(tok, messages, max_length=8) is None


def test_resume_and_retry_over_the_api(hf: ModelArtifact, staff: User) -> None:
    client = APIClient()
    client.force_authenticate(staff)
    job = create(hf, self_cognition=SC)
    assert client.post(f"/api/jobs/{job.pk}/resume/").status_code == 409  # still queued
    Job.objects.filter(pk=job.pk).update(status=Job.Status.CANCELLED)
    (finetune.job_files_dir(job.pk) / "checkpoints" / "checkpoint-3").mkdir(parents=True)
    assert client.get(f"/api/jobs/{job.pk}/").json()["resumable"] is True
    resumed = client.post(f"/api/jobs/{job.pk}/resume/")
    assert resumed.status_code == 201 and resumed.json()["params"]["resume_from"] == job.pk
    retried = client.post(f"/api/jobs/{job.pk}/retry/")
    assert retried.status_code == 201 and retried.json()["params"].get("resume_from") is None
    assert client.get(f"/api/jobs/{job.pk}/files/loss.png").status_code == 404
    (finetune.job_files_dir(job.pk) / "loss.png").write_bytes(b"\x89PNG fake")
    got = client.get(f"/api/jobs/{job.pk}/files/loss.png")
    assert got.status_code == 200 and got["Content-Type"] == "image/png"
    assert client.get(f"/api/jobs/{job.pk}/files/train.jsonl").status_code == 404  # not a served file
