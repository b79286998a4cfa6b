"""Synthesize an intent-and-slots dataset with a model: one checked example at a time.

For each intent of the spec a JSON Schema of one example is built (``example_schema``):
``{"slots": {...}, "text": "..."}``, the slot types and enums from the spec, the required slots
required, nothing else allowed. The slots come first, so a small model picks the values and then
writes a sentence around them. The model is asked for one example per call, with a prompt that
describes the domain, the intent and its slots and shows a few of the spec's utterances as
answers (annotated with the slot values found in them), decoded under that schema by the
platform's own backend (``inference.backends``: llama.cpp for GGUF, OpenVINO GenAI for IR), as
``/v1``'s ``response_format`` is: the engine's grammar, compiled once per schema; a schema an
engine cannot compile fails the step with the engine's reason.

Every answer is then checked here, whatever the engine: valid JSON, valid against the schema
(``jsonschema``), the text not empty and not one of the spec's utterances, every string slot value
found in the text (case-insensitive, on word boundaries), no slot left out whose listed value the
text names, and not a duplicate of an earlier example of any intent (``text_key``: case,
whitespace and end punctuation ignored). The seed changes on every attempt.
At module level: the standard library and the backend classes (pydantic; no Django, no engine:
those load in ``load()``), as the main environment of ``pipeline.jobs.steps`` has them.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from inference.backends.base import Backend, BackendError, GenerationParams
from inference.backends.llama_cpp import LlamaCppBackend, LlamaCppOptions
from inference.backends.openvino import OpenVINOBackend, OpenVINOOptions
from inference.constraints import JsonSchema
from pipeline.jobs.steps.engines import peak_rss_mb
from pipeline.jobs.steps.protocol import StepError, log, progress, threads

TEXT_MAX_CHARS = 200
SLOT_MAX_CHARS = 60
DEMOS_PER_PROMPT = 3
LOGGED_REJECTIONS_PER_INTENT = 5
N_CTX = 2048
GENERATOR_SYSTEM = (
    "You write examples of what users say to an assistant, for training data. "
    "Answer with one JSON object and nothing else."
)


# One model call: (messages, the example's JSON Schema, seed) -> (the answer, its finish reason).
Generate = Callable[[list[dict[str, str]], dict[str, Any], int], tuple[str, str]]


# ---------------------------------------------------------------- the spec as schema and prompt


def text_key(text: str) -> str:
    """What two texts must differ in to count as different examples."""
    return " ".join(text.casefold().split()).strip(" .!?,;:")


def find(text: str, value: Any) -> str | None:
    """``value`` as it is spelt in ``text`` (case-insensitive, not inside a longer word), or None."""
    needle = str(value).strip()
    found = re.search(r"(?<!\w)" + re.escape(needle) + r"(?!\w)", text, re.IGNORECASE) if needle else None
    return found.group(0) if found else None


def example_schema(intent: dict[str, Any]) -> dict[str, Any]:
    """The JSON Schema of one example of ``intent``: ``{"slots": {...}, "text": "..."}``."""
    properties: dict[str, Any] = {}
    for name, slot in intent.get("slots", {}).items():
        prop: dict[str, Any] = {"type": slot.get("type", "string")}
        if slot.get("values"):
            prop["enum"] = list(slot["values"])
        elif prop["type"] == "string":
            prop.update(minLength=1, maxLength=SLOT_MAX_CHARS)
        properties[name] = prop
    slots = {"type": "object", "properties": properties, "required": list(intent.get("required", [])),
             "additionalProperties": False}  # fmt: skip
    text = {"type": "string", "minLength": 1, "maxLength": TEXT_MAX_CHARS}
    return {
        "type": "object",
        "properties": {"slots": slots, "text": text},
        "required": ["slots", "text"],
        "additionalProperties": False,
    }


def _slot_line(name: str, slot: dict[str, Any], required: bool) -> str:
    facts = [slot.get("type", "string"), "required" if required else "optional"]
    if slot.get("values"):
        facts.append("one of " + ", ".join(map(str, slot["values"])))
    elif slot.get("examples"):
        facts.append("such as " + ", ".join(map(str, slot["examples"])))
    about = f": {slot['description']}" if slot.get("description") else ""
    return f"- {name} ({'; '.join(facts)}){about}"


def default_instruction(spec: dict[str, Any]) -> str:
    """The system message of each record when the spec gives no ``instruction``."""
    lines = [
        f"You turn a user's request about {spec['domain']} into JSON. "
        'Answer with {"intent": ..., "slots": {...}} and nothing else. The intents and their slots:'
    ]
    for intent in spec["intents"]:
        required = set(intent.get("required", []))
        slots = [
            f"{name} ({slot.get('type', 'string')}"
            + (", one of " + ", ".join(map(str, slot["values"])) if slot.get("values") else "")
            + (", required" if name in required else "")
            + ")"
            for name, slot in intent.get("slots", {}).items()
        ]
        about = intent["description"].rstrip()
        about += "" if about.endswith((".", "!", "?")) else "."
        lines.append(f"- {intent['name']}: {about}" + (f" Slots: {', '.join(slots)}." if slots else ""))
    return "\n".join(lines)


def _known_values(slot: dict[str, Any]) -> list[Any]:
    """The values a text may name for ``slot``: its enum, or a string slot's examples."""
    known = slot.get("values") or (slot.get("examples") if slot.get("type", "string") == "string" else None)
    return [v for v in known or [] if not isinstance(v, bool)]


def demos(intent: dict[str, Any]) -> list[dict[str, Any]]:
    """The intent's example utterances as answers, with the slot values (listed ones) found in them.

    An utterance in which a required slot's value cannot be found is left out (it would teach an
    answer that breaks the schema)."""
    out = []
    for text in intent.get("examples", []):
        slots: dict[str, Any] = {}
        for name, slot in intent.get("slots", {}).items():
            for value in _known_values(slot):
                if (spelt := find(text, value)) is not None:  # an example value as the text spells it
                    slots[name] = spelt if isinstance(value, str) and not slot.get("values") else value
                    break
        if all(name in slots for name in intent.get("required", [])):
            out.append({"slots": slots, "text": text})
    return out


def prompt(spec: dict[str, Any], intent: dict[str, Any], rng: random.Random) -> list[dict[str, str]]:
    """The messages that ask for one new example of ``intent`` (the demos and hint vary by ``rng``)."""
    required = set(intent.get("required", []))
    lines = [
        f"Domain: {spec['domain']}. Language: {spec.get('language', 'en')}.",
        f"Intent: {intent['name']} ({intent['description']}).",
    ]
    slots = intent.get("slots", {})
    if slots:
        lines.append("Slots:")
        lines.extend(_slot_line(name, slot, name in required) for name, slot in slots.items())
    else:
        lines.append("Slots: none, so slots is {}.")
    shown = demos(intent)
    rng.shuffle(shown)
    if shown:
        lines.append("Example answers:")
        lines.extend(json.dumps(d, ensure_ascii=False) for d in shown[:DEMOS_PER_PROMPT])
    lines.append(
        "Write one new example, different from these: the slot values, then the text of the request, "
        "which must contain each slot value word for word."
    )
    hints = [f"{name}: {rng.choice(slot['values'])}" for name, slot in slots.items()
             if slot.get("values") and (name in required or rng.random() < 0.5)]  # fmt: skip
    if hints:
        lines.append("This time use " + ", ".join(hints) + ".")
    return [{"role": "system", "content": GENERATOR_SYSTEM}, {"role": "user", "content": "\n".join(lines)}]


def attempt_seed(seed: int, intent_index: int, attempt: int) -> int:
    return (seed * 1_000_003 + intent_index * 10_007 + attempt) % 2**31


# ---------------------------------------------------------------- checking one answer


def parse_answer(raw: str) -> Any:
    """The JSON object in an answer; an unconstrained model may wrap it in words or a code fence."""
    raw = raw.strip()
    try:
        return json.loads(raw)
    except ValueError:
        start, end = raw.find("{"), raw.rfind("}")
        if start < 0 or end <= start:
            raise
        return json.loads(raw[start : end + 1])


def check(
    intent: dict[str, Any], validator: Any, raw: str, finish: str, copies: set[str]
) -> tuple[str | None, dict[str, Any] | None]:
    """``(None, {"text", "slots"})`` for a valid example, else ``(reason, None)``."""
    try:
        obj = parse_answer(raw)
    except ValueError:
        return ("truncated" if finish == "length" else "not_json"), None
    if next(iter(validator.iter_errors(obj)), None) is not None:
        return "schema", None
    text = " ".join(obj["text"].split())
    if not text:
        return "empty_text", None
    if text_key(text) in copies:
        return "copies_example", None
    slots = {k: (" ".join(v.split()) if isinstance(v, str) else v) for k, v in obj["slots"].items()}
    if any(v == "" for v in slots.values()):
        return "empty_slot", None
    if any(isinstance(v, str) and find(text, v) is None for v in slots.values()):
        return "slot_not_in_text", None
    for name, slot in intent.get("slots", {}).items():
        if name not in slots and any(find(text, v) is not None for v in _known_values(slot)):
            return "slot_missed", None
    return None, {"text": text, "slots": slots}


def record(instruction: str, intent: str, example: dict[str, Any]) -> dict[str, Any]:
    answer = json.dumps({"intent": intent, "slots": example["slots"]}, ensure_ascii=False)
    return {
        "messages": [
            {"role": "system", "content": instruction},
            {"role": "user", "content": example["text"]},
            {"role": "assistant", "content": answer},
        ],
        "intent": intent,
        "slots": example["slots"],
    }


def examples_generate(
    spec: dict[str, Any], generate: Generate, *, per_intent: int,
    max_attempts: int, seed: int = 0,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:  # fmt: skip
    """Up to ``per_intent`` valid, distinct records per intent, in at most ``max_attempts`` calls each."""
    from jsonschema import Draft202012Validator

    instruction = spec.get("instruction") or default_instruction(spec)
    copies = {text_key(t) for intent in spec["intents"] for t in intent.get("examples", [])}
    seen: set[str] = set()
    records: list[dict[str, Any]] = []
    reasons: Counter[str] = Counter()
    per: dict[str, dict[str, int]] = {}
    rejected_samples: list[dict[str, str]] = []
    total = len(spec["intents"])
    for index, intent in enumerate(spec["intents"]):
        name = intent["name"]
        schema = example_schema(intent)
        validator = Draft202012Validator(schema)
        tally = per[name] = {"valid": 0, "rejected": 0, "duplicates": 0, "attempts": 0}
        logged = 0
        while tally["valid"] < per_intent and tally["attempts"] < max_attempts:
            attempt_no = tally["attempts"]
            rng = random.Random(attempt_seed(seed, index, attempt_no))
            raw, finish = generate(prompt(spec, intent, rng), schema, attempt_seed(seed, index, attempt_no))
            tally["attempts"] += 1
            reason, example = check(intent, validator, raw, finish, copies)
            if example is not None and text_key(example["text"]) in seen:
                reason, example = "duplicate", None
            if example is not None:
                seen.add(text_key(example["text"]))
                records.append(record(instruction, name, example))
                tally["valid"] += 1
            elif reason == "duplicate":
                tally["duplicates"] += 1
            else:
                tally["rejected"] += 1
                reasons[str(reason)] += 1
                if len(rejected_samples) < 20:
                    rejected_samples.append({"intent": name, "reason": str(reason), "answer": raw[:300]})
                if logged < LOGGED_REJECTIONS_PER_INTENT:
                    logged += 1
                    log(f"{name}: rejected ({reason}): {raw[:300]!r}")
            done = max(tally["valid"] / per_intent, tally["attempts"] / max_attempts)
            counts = {k: sum(t[k] for t in per.values()) for k in ("valid", "rejected", "duplicates", "attempts")}
            progress(100 * (index + min(done, 1.0)) / total, _stage(name, tally, per_intent), metrics=counts)
        log(f"{_stage(name, tally, per_intent)} in {tally['attempts']} attempts")
    stats = {
        "records": len(records),
        "valid": sum(t["valid"] for t in per.values()),
        "rejected": sum(t["rejected"] for t in per.values()),
        "duplicates": sum(t["duplicates"] for t in per.values()),
        "attempts": sum(t["attempts"] for t in per.values()),
        "per_intent": per,
        "rejections": dict(reasons.most_common()),
        "short_intents": [n for n, t in per.items() if t["valid"] < per_intent],
        "empty_intents": [n for n, t in per.items() if t["valid"] == 0],
        "rejected_samples": rejected_samples,
    }
    return records, stats


def _stage(name: str, tally: dict[str, int], per_intent: int) -> str:
    dup = tally["duplicates"]
    return (f"{name}: {tally['valid']}/{per_intent} valid, {tally['rejected']} rejected, "
            f"{dup} duplicate{'' if dup == 1 else 's'}")  # fmt: skip


# ---------------------------------------------------------------- engines


def _backend(fmt: str, path: str) -> Backend:
    """The platform's own backend for the model, as a worker loads it: llama.cpp on this step's
    threads; OpenVINO in plain mode, each call from a fresh cache (as ``evaluate`` does)."""
    if fmt == "gguf":
        return LlamaCppBackend(model_path=path, options=LlamaCppOptions(n_threads=threads()), n_ctx=N_CTX)
    return OpenVINOBackend(model_path=path, options=OpenVINOOptions(kv_cache_reuse=False))


class Generator:
    """One model call through the backend interface, decoded under the example's JSON Schema."""

    constrained = "json_schema"

    def __init__(self, fmt: str, path: str, *, temperature: float, top_p: float, max_tokens: int) -> None:
        self.backend = _backend(fmt, path)
        self.engine = self.backend.label
        try:
            self.backend.load()
        except BackendError as exc:
            raise StepError(f"{self.engine} could not load {path}: {exc}") from exc
        self.temperature, self.top_p, self.max_tokens = temperature, top_p, max_tokens

    def __call__(self, messages: list[dict[str, str]], schema: dict[str, Any], seed: int) -> tuple[str, str]:
        params = GenerationParams(
            max_tokens=self.max_tokens, temperature=self.temperature, top_p=self.top_p,
            repetition_penalty=1.0,  # a slot value is repeated in the text on purpose
            seed=seed, constraint=JsonSchema(schema=schema, name="example"),
        )  # fmt: skip
        text, finish = "", ""
        try:
            for chunk in self.backend.stream_chat(messages, params):
                text += chunk.text
                finish = chunk.finish_reason or finish
        except BackendError as exc:  # a schema the engine cannot compile, a prompt that does not fit
            raise StepError(f"{self.engine}: {exc}") from exc
        return text, finish

    def close(self) -> None:
        self.backend.close()


FORMATS = ("gguf", "openvino")


# ---------------------------------------------------------------- the step


def synthesize(params: dict[str, Any]) -> dict[str, Any]:
    """Params: ``format``, ``path`` (the model), ``spec`` or ``spec_file``, ``output`` (a .jsonl),
    ``per_intent``, ``max_attempts`` (per intent), ``temperature``, ``top_p``, ``seed``, ``max_tokens``."""
    spec = params.get("spec") or json.loads(Path(params["spec_file"]).read_text(encoding="utf-8"))
    fmt = params["format"]
    if fmt not in FORMATS:
        raise StepError(f"cannot generate with a {fmt} artifact; use a GGUF or OpenVINO IR model")
    per_intent = int(params.get("per_intent", 10))
    max_attempts = int(params.get("max_attempts") or 4 * per_intent)
    progress(0, "loading the model", force=True)
    generator = Generator(
        fmt, str(params["path"]), temperature=float(params.get("temperature", 0.9)),
        top_p=float(params.get("top_p", 0.95)), max_tokens=int(params.get("max_tokens", 96)),
    )  # fmt: skip
    try:
        records, stats = examples_generate(
            spec, generator, per_intent=per_intent, max_attempts=max_attempts, seed=int(params.get("seed", 0))
        )
    finally:
        generator.close()
    if not records:
        why = ", ".join(f"{k} {v}" for k, v in stats["rejections"].items()) or "none"
        raise StepError(f"no valid example in {stats['attempts']} attempts (rejected: {why}; duplicates "
                        f"{stats['duplicates']}); see the log for the rejected answers")  # fmt: skip
    output = Path(params["output"])
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return {
        **stats,
        "engine": generator.engine,
        "constrained": generator.constrained,
        "instruction": spec.get("instruction") or default_instruction(spec),
        "peak_rss_mb": peak_rss_mb(),
    }
