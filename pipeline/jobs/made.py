"""What a job made, stored: its artifacts (with their lineage) and an evaluation's numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from inference.models import Evaluation, Job, ModelArtifact
from pipeline.jobs.base import Output


def artifacts_create(job: Job, source: ModelArtifact, folder: Path, outputs: list[Output]) -> None:
    # Named after the original model; the chain in between is the lineage (parent links).
    base = source.lineage()[0].name.removesuffix(" (bundled)")
    for out in outputs:
        artifact = ModelArtifact(
            name=f"{base} · {out.label} (job {job.pk})"[:200],
            format=out.format,
            path=str(folder / out.relpath),
            quantization=out.quantization[:50],
            parent=source,
            created_by_job=job,
            context_length=source.context_length or out.details.get("context_length"),
            details={**out.details, "kind": job.kind, "params": job.params},
        )
        artifact.size_bytes = artifact.measure_size()
        artifact.save()


def evaluation_create(job: Job, source: ModelArtifact, result: dict[str, Any]) -> None:
    Evaluation.objects.create(
        artifact=source,
        job=job,
        text=str(result.get("text", "heldout.txt"))[:200],
        perplexity=result.get("perplexity"),
        ppl_tokens=result.get("ppl_tokens"),
        size_bytes=result.get("size_bytes"),
        decode_tokens_per_s=result.get("decode_tokens_per_s"),
        prefill_tokens_per_s=result.get("prefill_tokens_per_s"),
        sample=str(result.get("sample", "")),
        details={k: v for k, v in result.items() if k not in ("sample",)},
    )
