"""The ``synthesize`` kind: a model writes training examples for an intent-and-slots spec.

A spec names a domain and its intents (``meeting.start``, ``meeting.mute``), each with a
description, typed slots (``room``: string; ``participant``: one of Alice, Bob, Carol), the slots it
requires and a few example utterances. The job asks a GGUF or OpenVINO model for ``per_intent``
examples of each intent, one at a time under constrained decoding, checks every answer against
the intent's JSON Schema and the spec, drops duplicates, and saves the valid ones as a dataset
artifact that ``finetune_lora`` takes (``params.datasets``): one chat per example, the system
message being the spec's ``instruction`` (or one built from the spec), the user's text, and the
answer ``{"intent": ..., "slots": {...}}`` as JSON. The work is in
``pipeline.jobs.steps.synthesize``; its progress stage counts the valid and rejected examples.

The model is a ``source`` artifact or an ``agent``'s (``params.agent``: its slug, resolved through
the agents layer, which checks that the user may use it). An agent lends only its model: the
job's own sampling settings apply (``temperature`` 0.9 and ``top_p`` 0.95 unless given), since an
agent's are tuned for one best answer (0.7 by default, often 0), and synthesis needs variety: at
temperature 0 every attempt would repeat the first example.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StringConstraints,
    ValidationInfo,
    field_validator,
)

from pipeline.jobs.base import Format, Kind, Output, Params
from pipeline.jobs.context import JobContext
from pipeline.jobs.sources import agent_source

INTENT_NAME = r"^[A-Za-z][A-Za-z0-9_-]*(\.[A-Za-z][A-Za-z0-9_-]*)*$"
SLOT_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
SOURCES = (Format.GGUF, Format.OPENVINO)

Utterance = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300)]
Scalar = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=60)]


def _fits(slot_type: str, value: Any) -> bool:
    if slot_type == "string":
        return isinstance(value, str)
    if slot_type == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if slot_type == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, bool)


class SlotSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["string", "integer", "number", "boolean"] = Field("string", description="The value's JSON type.")
    description: str = Field("", max_length=500, description="What the slot holds, for the model.")
    values: list[Scalar | StrictInt | StrictFloat] | None = Field(
        None, min_length=1, max_length=100, description="The only values it may take (an enum)."
    )
    examples: list[Scalar | StrictInt | StrictFloat | StrictBool] = Field(
        default_factory=list, max_length=20, description="A few values, shown to the model."
    )

    @field_validator("values")
    @classmethod
    def _values(cls, value: list[Any] | None, info: ValidationInfo) -> list[Any] | None:
        slot_type = info.data.get("type", "string")
        if value is None:
            return value
        if slot_type == "boolean":
            raise ValueError("a boolean slot takes no values")
        for item in value:
            if not _fits(slot_type, item):
                raise ValueError(f"{item!r} is not a{'n' if slot_type == 'integer' else ''} {slot_type}")
        if len({json.dumps(v) for v in value}) != len(value):
            raise ValueError("values repeat")
        return value

    @field_validator("examples")
    @classmethod
    def _examples(cls, value: list[Any], info: ValidationInfo) -> list[Any]:
        slot_type = info.data.get("type", "string")
        for item in value:
            if not _fits(slot_type, item):
                raise ValueError(f"{item!r} is not a{'n' if slot_type == 'integer' else ''} {slot_type}")
        return value


class IntentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=100, pattern=INTENT_NAME, description="e.g. meeting.start")
    description: str = Field(min_length=1, max_length=500, description="What the user wants, for the model.")
    slots: dict[str, SlotSpec] = Field(default_factory=dict, max_length=20, description="Slot name -> its spec.")
    required: list[str] = Field(default_factory=list, description="The slots every example must fill.")
    examples: list[Utterance] = Field(default_factory=list, max_length=20, description="A few utterances.")

    @field_validator("slots")
    @classmethod
    def _slot_names(cls, value: dict[str, SlotSpec]) -> dict[str, SlotSpec]:
        for name in value:
            if not re.match(SLOT_NAME, name):
                raise ValueError(f"{name!r} is not a slot name (letters, digits, _)")
        return value

    @field_validator("required")
    @classmethod
    def _required(cls, value: list[str], info: ValidationInfo) -> list[str]:
        slots = info.data.get("slots")
        if slots is None:  # the slots were refused: that error is reported
            return value
        for name in value:
            if name not in slots:
                raise ValueError(f"{name!r} is not one of this intent's slots ({', '.join(slots) or 'none'})")
        if len(set(value)) != len(value):
            raise ValueError("slots repeat")
        return value


class SynthesisSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    domain: str = Field(min_length=1, max_length=200, description="What the requests are about.")
    language: str = Field("en", pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$", description="e.g. en, de, pt-BR.")
    instruction: str | None = Field(
        None, min_length=1, max_length=4000,
        description="The system message of every example (default: one built from the spec).",
    )  # fmt: skip
    intents: list[IntentSpec] = Field(min_length=1, max_length=50, description="The intents to write examples of.")

    @field_validator("intents")
    @classmethod
    def _unique(cls, value: list[IntentSpec]) -> list[IntentSpec]:
        names = [i.name for i in value]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"intent names repeat: {', '.join(repeated)}")
        return value


class SynthesizeParams(Params):
    source: int | None = Field(  # type: ignore[assignment]
        None, description="The generating model (GGUF or OpenVINO IR); filled in from agent."
    )
    agent: str | None = Field(None, min_length=1, max_length=100, description="An agent whose model generates.")
    spec: SynthesisSpec = Field(description="The domain, its intents and their slots.")
    per_intent: int = Field(10, ge=1, le=1000, description="Valid examples wanted per intent.")
    max_attempts: int | None = Field(
        None, ge=1, le=100_000, description="Model calls per intent (default 4 × per_intent)."
    )
    temperature: float = Field(0.9, ge=0, le=2, description="Sampling temperature (variety).")
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling.")
    seed: int = Field(0, ge=0, description="Random seed; each attempt uses its own, derived from it.")
    max_tokens: int = Field(96, ge=16, le=1024, description="Tokens per answer.")


def _prepare(p: SynthesizeParams, user: Any, commit: bool) -> SynthesizeParams:
    return agent_source(  # type: ignore[no-any-return]
        p, user, SOURCES, needs="synthesize needs GGUF or OpenVINO IR",
        missing="give an agent (its model writes the examples) or a source artifact",
    )  # fmt: skip


def run_synthesize(ctx: JobContext, p: SynthesizeParams) -> list[Output]:
    src = ctx.source
    ctx.workdir.mkdir(parents=True, exist_ok=True)
    # The spec goes in a file beside the dataset (a command line holds about 128 KiB).
    spec_file = ctx.workdir / "spec.json"
    spec_file.write_text(json.dumps(p.spec.model_dump(exclude_none=True), ensure_ascii=False, indent=1))
    params = {
        "format": src.format, "path": src.path, "spec_file": str(spec_file),
        "output": str(ctx.workdir / "dataset.jsonl"), "per_intent": p.per_intent,
        "max_attempts": p.max_attempts or 4 * p.per_intent, "temperature": p.temperature, "top_p": p.top_p,
        "seed": p.seed, "max_tokens": p.max_tokens,
    }  # fmt: skip
    out = ctx.step("synthesize", params, span=(0, 100))
    details = {k: out[k] for k in ("records", "valid", "rejected", "duplicates", "attempts", "per_intent",
                                   "rejections", "short_intents", "empty_intents", "engine", "constrained")
               if k in out}  # fmt: skip
    details["intents"] = [i.name for i in p.spec.intents]
    if p.agent:
        details["agent"] = p.agent
    if out.get("empty_intents"):
        ctx.log(f"no valid example for: {', '.join(out['empty_intents'])}")
    return [Output("dataset.jsonl", Format.DATASET, "", f"dataset: {out['records']} examples", details)]


SYNTHESIZE = Kind(
    "synthesize", SynthesizeParams, SOURCES, run_synthesize,
    "A model writes N examples per intent of an intents-and-slots spec, each checked against the spec's JSON "
    "Schema and de-duplicated: a dataset artifact for finetune_lora",
    makes=lambda p: Format.DATASET, prepare=_prepare,
)  # fmt: skip
