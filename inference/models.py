from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone

from inference.formats import format_label, format_register, format_validate


class Job(models.Model):
    """A long job (convert, quantize, fine-tune, evaluate, benchmark) run on the `jobs` queue.

    The row is the job's only state: the Celery task carries just its id and claims it with a
    conditional update (``queued -> running``), so a second delivery does nothing. The worker
    renews ``heartbeat_at`` while it runs; a running job whose heartbeat lapsed lost its worker
    and is marked ``interrupted`` (``pipeline.jobs.reaper``). See docs/jobs.md.
    """

    class Kind(models.TextChoices):
        CONVERT = "convert"
        EXPORT_OPENVINO = "export_openvino"
        QUANTIZE_GGUF = "quantize_gguf"
        QUANTIZE_RTN = "quantize_rtn"
        GPTQ = "gptq"
        FINETUNE_LORA = "finetune_lora"
        SYNTHESIZE = "synthesize"
        EVALUATE = "evaluate"
        BENCHMARK = "benchmark"

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"
        INTERRUPTED = "interrupted"

    # A name of pipeline.jobs.kinds.KINDS, checked when the job is made (not a closed choice of the
    # column: a new kind needs no migration). ``Kind`` names the built-in ones.
    kind = models.CharField(max_length=32)
    params = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    progress = models.FloatField(default=0.0, help_text="0-100")
    stage = models.CharField(max_length=200, blank=True)
    log = models.TextField(blank=True, help_text="The last lines of the log; the whole log is in log_path.")
    log_path = models.CharField(max_length=1000, blank=True)
    error = models.TextField(blank=True)
    result = models.JSONField(default=dict, blank=True, help_text="What the job's steps reported.")
    queue = models.CharField(max_length=100, default="jobs")
    worker = models.CharField(max_length=200, blank=True, help_text="The worker (host and pid) that ran it.")
    cancel_requested = models.BooleanField(default=False)
    retry_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="retries")
    after = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="chained",
        help_text="The job whose result this one was started on (a ``then`` chain).",
    )  # fmt: skip
    metrics = models.JSONField(
        default=dict, blank=True, help_text="What the job reports as it runs: step, loss, loss history, counts."
    )
    created_by = models.ForeignKey("auth.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    peak_rss_bytes = models.BigIntegerField(null=True, blank=True, help_text="Peak memory of the job's processes.")

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "heartbeat_at"])]

    def __str__(self) -> str:
        return f"{self.kind} #{self.pk} ({self.status})"

    FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, Status.INTERRUPTED)

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED

    def duration_seconds(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.finished_at or timezone.now()
        return max(0.0, (end - self.started_at).total_seconds())

    def eta_seconds(self) -> float | None:
        """Seconds left at the pace so far; None before 1 % or once finished."""
        elapsed = self.duration_seconds()
        if self.status != self.Status.RUNNING or elapsed is None or self.progress < 1:
            return None
        return round(elapsed * (100 - self.progress) / self.progress, 1)


class ArtifactQuerySet(models.QuerySet["ModelArtifact"]):
    def visible_to(self, user: Any) -> ArtifactQuerySet:
        """The shared artifacts (no owner) and ``user``'s own: another user's private artifact (a
        snapshot of their chats) is as if it did not exist."""
        if user is None or not getattr(user, "is_authenticated", False):
            return self.filter(owner__isnull=True)
        return self.filter(Q(owner__isnull=True) | Q(owner=user))


class ModelArtifact(models.Model):
    """A model on disk (a GGUF file, an OpenVINO IR folder, a Hugging Face folder) or behind a URL.

    ``owner`` makes it private: a dataset snapshotted from a user's chats (a fine-tune on their
    sessions or compare picks) is listed, shown and trained on for that user only. None: shared
    with every staff user, as models and uploaded datasets are."""

    class Format(models.TextChoices):
        GGUF = "gguf", "GGUF"
        OPENVINO = "openvino", "OpenVINO IR"
        HF = "hf", "Hugging Face"
        RTN = "rtn", "Round-to-nearest (evaluation only)"
        DATASET = "dataset", "Dataset (text or JSONL)"
        SERVED = "served", "Served (URL)"

    name = models.CharField(max_length=200, unique=True)
    # Checked against the registry (inference.formats), not a closed choice: see there.
    format = models.CharField(max_length=16, validators=[format_validate])
    path = models.CharField(max_length=1000, blank=True, help_text="File or folder on the worker, for on-disk formats.")
    url = models.URLField(max_length=1000, blank=True, help_text="Base URL, for served models.")
    quantization = models.CharField(max_length=50, blank=True, help_text="e.g. Q4_1, int4, GPTQ")
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children")
    created_by_job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="artifacts")
    size_bytes = models.BigIntegerField(null=True, blank=True, help_text="Size on disk.")
    context_length = models.PositiveIntegerField(
        null=True, blank=True, help_text="The model's trained context window, when known."
    )
    notes = models.TextField(blank=True)
    details = models.JSONField(
        default=dict, blank=True, help_text="What made it: file type, tensor types, settings, checks."
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="private_artifacts",
        help_text="Only this user sees and uses it (a snapshot of their chats); empty: shared.",
    )  # fmt: skip
    created_at = models.DateTimeField(auto_now_add=True)

    objects = ArtifactQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def get_format_display(self) -> str:
        return format_label(self.format)

    def clean(self) -> None:
        if self.format == self.Format.SERVED:
            if not self.url:
                raise ValidationError({"url": "A served model needs a URL."})
        elif not self.path:
            raise ValidationError({"path": "A model on disk needs a path."})

    def lineage(self) -> list[ModelArtifact]:
        """This artifact and its ancestors, oldest first."""
        chain: list[ModelArtifact] = []
        node: ModelArtifact | None = self
        seen: set[int] = set()
        while node is not None and node.pk not in seen:
            seen.add(node.pk)
            chain.append(node)
            node = node.parent
        return list(reversed(chain))

    def measure_size(self) -> int | None:
        """Bytes on disk of the file or folder at ``path``; None when it is not there."""
        if not self.path:
            return None
        p = Path(self.path)
        if p.is_file():
            return p.stat().st_size
        if p.is_dir():
            return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
        return None


for _format in ModelArtifact.Format:
    format_register(_format.value, str(_format.label))


class Evaluation(models.Model):
    """One evaluation of an artifact: perplexity on a held-out text, size, speed and a sample."""

    artifact = models.ForeignKey(ModelArtifact, on_delete=models.CASCADE, related_name="evaluations")
    job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="evaluations")
    text = models.CharField(max_length=200, help_text="The held-out text the perplexity is measured on.")
    perplexity = models.FloatField(null=True, blank=True)
    ppl_tokens = models.PositiveIntegerField(null=True, blank=True)
    size_bytes = models.BigIntegerField(null=True, blank=True)
    decode_tokens_per_s = models.FloatField(null=True, blank=True)
    prefill_tokens_per_s = models.FloatField(null=True, blank=True)
    sample = models.TextField(blank=True, help_text="The greedy answer to the evaluation prompt.")
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.artifact} ppl={self.perplexity}"
