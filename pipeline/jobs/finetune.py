"""The ``finetune_lora`` kind: LoRA supervised fine-tuning of a Hugging Face artifact.

The data is gathered here, in the worker, into one ``train.jsonl`` in the job's own folder
(``ARTIFACT_ROOT/jobs/job-<id>``, kept after the job ends): self-cognition rows, dataset
artifacts (uploads, synthesized sets, snapshots of picked sessions or compare picks). The
training itself runs in a child process (``pipeline.jobs.steps.finetune``): peft's LoRA on
transformers' Trainer, loss only on the assistant's tokens, checkpoints in the job's folder,
a cooperative stop at the next optimizer step on cancel, then the adapter merged into a new
Hugging Face artifact whose parent is the base. ``then`` chains convert / quantize / export.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, Literal

from django.conf import settings
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from inference.models import Job, ModelArtifact
from pipeline import training
from pipeline.jobs import datasets
from pipeline.jobs.base import Format, Kind, Output, Params
from pipeline.jobs.context import JobContext
from pipeline.jobs.errors import JobError, JobFailed
from pipeline.jobs.paths import job_files_dir, last_checkpoint


class SelfCognition(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=60, description="The name the model answers with.")
    author: str = Field(min_length=1, max_length=100, description="Who made it, as the model says.")
    name_zh: str | None = Field(None, max_length=60, description="The name in Chinese rows (default: name).")
    author_zh: str | None = Field(None, max_length=100, description="The author in Chinese rows (default: author).")
    languages: list[Literal["en", "zh"]] = Field(["en", "zh"], min_length=1, description="Which rows to use.")


class FinetuneParams(Params):
    self_cognition: SelfCognition | None = Field(None, description="Teach the model its name and author.")
    datasets: list[int] = Field(default_factory=list, max_length=20, description="Dataset artifacts (JSONL chats).")
    sessions: list[int] = Field(default_factory=list, max_length=500, description="Your chat sessions to learn from.")
    preferences: bool = Field(False, description="Learn the replies you picked in compare.")
    repeat: int = Field(1, ge=1, le=100, description="Times each self-cognition row is repeated in an epoch.")
    rank: int = Field(16, ge=1, le=512, description="LoRA rank r.")
    alpha: int = Field(32, ge=1, le=4096, description="LoRA alpha (scale = alpha / r).")
    dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout.")
    target_modules: list[str] = Field(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], min_length=1,
        description="Module names LoRA wraps, or [\"all-linear\"].",
    )  # fmt: skip
    learning_rate: float = Field(1e-3, gt=0, le=1, description="Peak learning rate (cosine decay, 5 % warm-up).")
    epochs: float = Field(3.0, gt=0, le=1000, description="Passes over the data (unless max_steps is set).")
    max_steps: int | None = Field(None, ge=1, le=1_000_000, description="Stop after this many optimizer steps.")
    max_length: int = Field(256, ge=16, le=32768, description="Tokens per example; longer ones are cut.")
    batch_size: int = Field(8, ge=1, le=1024, description="Examples per optimizer step.")
    seed: int = Field(42, description="Random seed (data order, LoRA init, dropout).")
    save_steps: int = Field(20, ge=1, le=100_000, description="Save a checkpoint every this many steps.")
    keep_checkpoints: int = Field(2, ge=1, le=100, description="Checkpoints kept (older ones are removed).")
    resume_from: int | None = Field(None, description="A finetune_lora job whose last checkpoint to go on from.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="cuda sends the job to the GPU queue; auto uses a GPU when the worker has one."
    )

    @field_validator("target_modules")
    @classmethod
    def _modules(cls, value: list[str]) -> list[str]:
        for name in value:
            if not name or not name.replace("_", "").replace("-", "").replace(".", "").isalnum():
                raise ValueError(f"{name!r} is not a module name")
        return value

    @model_validator(mode="after")
    def _some_data(self) -> FinetuneParams:
        if not (self.self_cognition or self.datasets or self.sessions or self.preferences):
            raise ValueError("give training data: self_cognition, datasets, sessions or preferences")
        return self


def _prepare(p: FinetuneParams, user: Any, commit: bool) -> FinetuneParams:
    # Another user's chat snapshot answers as if it did not exist (a retry of their job, too).
    for i, pk in enumerate(p.datasets):
        if not ModelArtifact.objects.visible_to(user).filter(pk=pk, format=Format.DATASET).exists():
            raise JobError(f"no dataset artifact with id {pk}", field=f"params.datasets.{i}")
    if p.resume_from is not None:
        earlier = Job.objects.filter(pk=p.resume_from, kind="finetune_lora").first()
        if earlier is None:
            raise JobError(f"no finetune_lora job {p.resume_from}", field="params.resume_from")
        if last_checkpoint(earlier.pk) is None:
            raise JobError(f"job {earlier.pk} saved no checkpoint to resume from", field="params.resume_from")
    # Sessions and compare picks are copied into a dataset artifact now, so the job trains on what
    # was picked even if the chats change, and a retry trains on the same rows. The copy is the
    # user's own (``owner``): no other staff user lists it, reads it or trains on it.
    if (p.sessions or p.preferences) and not getattr(user, "is_authenticated", False):
        raise JobError("only a signed-in user can train on their chats", field="params.sessions" if p.sessions
                       else "params.preferences")  # fmt: skip
    gathered: list[tuple[str, Any, list[dict[str, Any]]]] = []
    for name, value in (("sessions", p.sessions), ("preferences", p.preferences)):
        if not value:
            continue
        try:
            gathered.append((name, value, training.records_from(name, user, value)))
        except datasets.DatasetError as exc:
            raise JobError(exc.message, field=f"params.{name}") from None
    if not commit or not gathered:
        return p
    snapshots: list[ModelArtifact] = []
    try:
        for name, value, records in gathered:
            label = f"sessions {', '.join(map(str, p.sessions))}" if name == "sessions" else "compare picks"
            who = getattr(user, "username", "") or "?"
            # A name of its own (before the label, which a long list of sessions cuts short): names
            # are unique across users, and another user who tried this one for an upload would
            # otherwise learn from the answer that the snapshot exists.
            unique = f"Chats of {who} ({uuid.uuid4().hex[:8]}): {label}"
            details = {"source": name, "value": value, "user": who}
            artifact = datasets.dataset_save(records, name=unique, details=details)
            snapshots.append(artifact)
            # The row is written in job_create's transaction: nobody sees it before its owner is set.
            ModelArtifact.objects.filter(pk=artifact.pk).update(owner=user)
    except BaseException:
        # The transaction drops the rows; the files are this function's to remove.
        for artifact in snapshots:
            Path(artifact.path).unlink(missing_ok=True)
        raise
    pks = [artifact.pk for artifact in snapshots]
    return p.model_copy(update={"datasets": [*p.datasets, *pks], "sessions": [], "preferences": False})


def _records(ctx: JobContext, p: FinetuneParams) -> tuple[list[dict[str, Any]], dict[str, int]]:
    records: list[dict[str, Any]] = []
    counts: dict[str, int] = {}
    if p.self_cognition is not None:
        sc = p.self_cognition
        rows = datasets.self_cognition_records(
            sc.name, sc.author, name_zh=sc.name_zh, author_zh=sc.author_zh, tags=tuple(sc.languages)
        )
        counts["self_cognition"] = len(rows) * p.repeat
        records.extend(rows * p.repeat)

    for pk in p.datasets:
        # Checked when the job was made; checked again for whoever made it (its owner's snapshot).
        artifact = ModelArtifact.objects.visible_to(ctx.job.created_by).filter(pk=pk).first()
        if artifact is None:
            raise JobFailed(f"dataset {pk} no longer exists")
        try:
            rows = datasets.records_read(artifact.path)
        except (OSError, datasets.DatasetError) as exc:
            raise JobFailed(f"dataset {pk} cannot be read: {exc}") from None
        counts[f"dataset {pk}"] = len(rows)
        records.extend(rows)
    return records, counts


def run_finetune(ctx: JobContext, p: FinetuneParams) -> list[Output]:
    files = job_files_dir(ctx.job.pk)
    records, counts = _records(ctx, p)
    train_file = files / "train.jsonl"
    datasets.records_write(train_file, records)
    ctx.log(f"training data: {len(records)} conversations ({', '.join(f'{k}: {v}' for k, v in counts.items())})")
    resume = str(last_checkpoint(p.resume_from)) if p.resume_from is not None else None
    params = {
        "source": ctx.source.path, "train_file": str(train_file), "output": str(ctx.workdir / "model"),
        "checkpoints": str(files / "checkpoints"), "loss_png": str(files / "loss.png"), "resume": resume,
        "source_name": ctx.source.name[:60],
        **p.model_dump(include={
            "rank", "alpha", "dropout", "target_modules", "learning_rate", "epochs", "max_steps", "max_length",
            "batch_size", "seed", "save_steps", "keep_checkpoints", "device",
        }),
    }  # fmt: skip
    out = ctx.step("finetune_lora", params, span=(0, 100))
    details = {k: v for k, v in out.items() if k not in ("loss_history",)}
    details["data"] = counts
    if p.self_cognition is not None:
        details["self_cognition"] = p.self_cognition.model_dump()
    return [Output("model", Format.HF, "f32", "LoRA fine-tune (merged)", details)]


def _hf_float(p: Any, source: ModelArtifact) -> str | None:
    if (source.details or {}).get("python_env"):
        return f"artifact {source.pk} is quantized ({source.quantization}); fine-tune its float parent"
    return None


FINETUNE = Kind(
    "finetune_lora", FinetuneParams, (Format.HF,), run_finetune,
    "LoRA supervised fine-tuning (peft + transformers' Trainer) on self-cognition rows, JSONL chats, picked "
    "sessions or compare picks; the adapter is merged into a new Hugging Face model",
    source_check=_hf_float, makes=lambda p: Format.HF, prepare=_prepare,
    queue_for=lambda p: settings.JOB_GPU_QUEUE if p.device == "cuda" else "jobs", kill_grace=120.0,
)  # fmt: skip
