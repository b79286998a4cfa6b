"""Export a GGUF (the bundled one by default) to an OpenVINO IR and register it as an artifact.

Re-running with the same GGUF and settings reuses the complete export and keeps the artifact.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from inference.bundled import BUNDLED_NAME, BundledModelMissing, bundled_model_path
from inference.models import ModelArtifact
from pipeline.convert import ConversionError, ExportSettings, ir_size_bytes, openvino_ir_from_gguf


class Command(BaseCommand):
    help = "Convert a GGUF to an int4/int8 OpenVINO IR (GGUF -> Hugging Face -> optimum-cli) and register it."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "source", nargs="?", choices=["bundled"], help="Export the bundled model (the default without --gguf)."
        )
        parser.add_argument("--gguf", help="Path of the GGUF file to export.")
        parser.add_argument("--weight-format", choices=["int4", "int8"], default="int4")
        parser.add_argument("--group-size", type=int, default=64, help="int4 group size; -1 = per channel.")
        parser.add_argument("--ratio", type=float, default=1.0, help="Share of layers in int4 (the rest int8).")
        parser.add_argument("--sym", action="store_true", help="Symmetric int4 quantization.")
        parser.add_argument("--out", help="IR folder to write; default: a folder in the model cache.")
        parser.add_argument("--name", help="Artifact name; default: derived from the GGUF and the settings.")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["gguf"] and options["source"]:
            raise CommandError("Give either --gguf PATH or bundled, not both.")
        if options["gguf"]:
            gguf = Path(options["gguf"]).expanduser().resolve()
            if not gguf.is_file():
                raise CommandError(f"GGUF file not found: {gguf}")
        else:
            try:
                gguf = bundled_model_path()
            except BundledModelMissing as exc:
                raise CommandError(str(exc)) from None
        try:
            settings = ExportSettings(
                weight_format=options["weight_format"],
                group_size=options["group_size"],
                ratio=options["ratio"],
                sym=options["sym"],
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None

        parent = ModelArtifact.objects.filter(format=ModelArtifact.Format.GGUF, path=str(gguf)).first()
        self.stdout.write(f"source: {gguf}" + (f" (artifact {parent.name})" if parent else " (no artifact)"))
        try:
            folder = openvino_ir_from_gguf(
                gguf, settings=settings, out_dir=options["out"], log=lambda line: self.stdout.write(line)
            )
        except ConversionError as exc:
            raise CommandError(str(exc)) from None

        base = parent.name if parent else gguf.stem
        if parent and parent.name == BUNDLED_NAME:
            base = "SmolLM2-135M-Instruct"
        name = options["name"] or f"{base} OpenVINO {settings.slug()}"
        fields = {
            "format": ModelArtifact.Format.OPENVINO,
            "path": str(folder),
            "quantization": settings.weight_format,
            "parent": parent,
            "size_bytes": ir_size_bytes(folder),
            "context_length": _context_length(folder) or (parent.context_length if parent else None),
            "notes": f"Exported from {gguf.name} with optimum-cli ({settings.slug()}).",
        }
        with transaction.atomic():
            artifact, made = ModelArtifact.objects.select_for_update().get_or_create(name=name, defaults=fields)
            changed = [key for key, value in fields.items() if getattr(artifact, key) != value]
            if not made and changed:
                for key in changed:
                    setattr(artifact, key, fields[key])
                artifact.save(update_fields=changed)
        state = "created" if made else ("updated" if changed else "kept")
        self.stdout.write(
            f"model artifact: {artifact.name} {state} ({artifact.path}, {artifact.size_bytes} bytes, "
            f"lineage: {' -> '.join(a.name for a in artifact.lineage())})"
        )


def _context_length(folder: Path) -> int | None:
    try:
        value = json.loads((folder / "config.json").read_text()).get("max_position_embeddings")
    except (OSError, ValueError):
        return None
    return value if isinstance(value, int) else None
