"""Training data: the chat-records format, its line-by-line check, and dataset artifacts.

A dataset artifact is a JSONL file, one conversation per line, in the shape OpenAI's and most
fine-tuning tools take: ``{"messages": [{"role": "system"|"user"|"assistant", "content": "..."}]}``
(other keys, such as a synthesized example's ``intent`` and ``slots``, are kept and ignored).
Uploads may also use ms-swift's ``{"query", "response"[, "system"]}`` rows or preference pairs
``{"prompt", "chosen", "rejected"}`` (trained on prompt -> chosen); both are stored as messages.

Where the rows come from:

- ``self_cognition_records``: ms-swift's self-cognition shape (``query``, ``response``, ``tag``
  zh/en with ``{{NAME}}`` / ``{{AUTHOR}}``), from ``data/self_cognition.jsonl``;
- an upload (``POST /api/datasets/``), checked by ``records_parse``: the first bad line is named;
- the upper layers' sources (``source_install``): sessions a user picked, replies picked in
  compare. This layer knows no session: ``sessions_app`` installs them when it is ready.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from django.conf import settings

from inference.models import ModelArtifact

DATA_DIR = Path(__file__).resolve().parent / "data"
SELF_COGNITION_FILE = DATA_DIR / "self_cognition.jsonl"
ROLES = ("system", "user", "assistant")
MAX_LINE_BYTES = 1_000_000
MAX_RECORDS = 200_000


class DatasetError(Exception):
    """Rows that cannot be trained on; ``line`` is the 1-based line of an upload when known."""

    def __init__(self, message: str, *, line: int | None = None) -> None:
        super().__init__(f"line {line}: {message}" if line else message)
        self.message = message
        self.line = line


# --------------------------------------------------------------------------- one record


def record_normalize(obj: Any) -> dict[str, Any]:
    """A row in any accepted shape as ``{"messages": [...], **other keys}``; DatasetError if not."""
    if not isinstance(obj, dict):
        raise DatasetError(f"expected a JSON object, got {type(obj).__name__}")
    if "messages" in obj:
        messages = obj["messages"]
        extra = {k: v for k, v in obj.items() if k != "messages"}
    elif "query" in obj and "response" in obj:
        messages = [{"role": "user", "content": obj["query"]}, {"role": "assistant", "content": obj["response"]}]
        if obj.get("system"):
            messages.insert(0, {"role": "system", "content": obj["system"]})
        extra = {k: v for k, v in obj.items() if k not in ("query", "response", "system")}
    elif "prompt" in obj and "chosen" in obj:
        messages = [{"role": "user", "content": obj["prompt"]}, {"role": "assistant", "content": obj["chosen"]}]
        extra = {k: v for k, v in obj.items() if k not in ("prompt", "chosen")}
    else:
        raise DatasetError('expected "messages", or "query" and "response", or "prompt" and "chosen"')
    if not isinstance(messages, list) or not messages:
        raise DatasetError('"messages" must be a non-empty list')
    clean = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise DatasetError(f"messages[{i}] must be an object")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise DatasetError(f"messages[{i}].role must be one of {', '.join(ROLES)}, got {role!r}")
        if not isinstance(content, str) or not content.strip():
            raise DatasetError(f"messages[{i}].content must be a non-empty string")
        if role == "system" and i != 0:
            raise DatasetError(f"messages[{i}]: a system message may only come first")
        clean.append({"role": role, "content": content})
    if not any(m["role"] == "user" for m in clean):
        raise DatasetError("a conversation needs at least one user message")
    if clean[-1]["role"] != "assistant":
        raise DatasetError("the last message must be the assistant's (the text to learn)")
    return {"messages": clean, **extra}


def records_parse(lines: Iterable[bytes | str]) -> list[dict[str, Any]]:
    """JSONL lines as records; the first bad line raises DatasetError naming it. Blank lines skip."""
    records = []
    for number, raw in enumerate(lines, start=1):
        if len(raw) > MAX_LINE_BYTES:
            raise DatasetError(f"longer than {MAX_LINE_BYTES} bytes", line=number)
        try:
            text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        except UnicodeDecodeError:
            raise DatasetError("not UTF-8 text", line=number) from None
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except ValueError as exc:
            raise DatasetError(f"not valid JSON ({exc})", line=number) from None
        try:
            records.append(record_normalize(obj))
        except DatasetError as exc:
            raise DatasetError(exc.message, line=number) from None
        if len(records) > MAX_RECORDS:
            raise DatasetError(f"more than {MAX_RECORDS} records", line=number)
    if not records:
        raise DatasetError("the file holds no records")
    return records


# --------------------------------------------------------------------------- self-cognition


def self_cognition_rows() -> list[dict[str, str]]:
    """The template rows, ``{query, response, tag}`` with ``{{NAME}}`` / ``{{AUTHOR}}``."""
    with SELF_COGNITION_FILE.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def self_cognition_records(
    name: str, author: str, *, name_zh: str | None = None, author_zh: str | None = None,
    tags: tuple[str, ...] = ("en", "zh"), system_prompt: str = "You are a helpful assistant.",
) -> list[dict[str, Any]]:  # fmt: skip
    """Each template row filled in, once without a system message and once with ``system_prompt``
    (so the answer holds with the chat template's default system message and with an agent's own)."""
    out = []
    for row in self_cognition_rows():
        if row["tag"] not in tags:
            continue
        n, a = (name_zh or name, author_zh or author) if row["tag"] == "zh" else (name, author)
        query = row["query"].replace("{{NAME}}", n).replace("{{AUTHOR}}", a)
        response = row["response"].replace("{{NAME}}", n).replace("{{AUTHOR}}", a)
        pair = [{"role": "user", "content": query}, {"role": "assistant", "content": response}]
        out.append({"messages": pair, "tag": row["tag"]})
        if system_prompt:
            out.append({"messages": [{"role": "system", "content": system_prompt}, *pair], "tag": row["tag"]})
    return out


# --------------------------------------------------------------------------- files and artifacts


def records_write(path: Path, records: Iterable[dict[str, Any]]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count


def records_read(path: str | Path) -> list[dict[str, Any]]:
    with Path(path).open("rb") as fh:
        return records_parse(fh)


def dataset_save(records: list[dict[str, Any]], *, name: str, details: dict[str, Any] | None = None) -> ModelArtifact:
    """Store checked records as a new dataset artifact under ``ARTIFACT_ROOT/datasets``."""
    folder = Path(settings.ARTIFACT_ROOT) / "datasets"
    path = folder / f"{uuid.uuid4().hex[:12]}.jsonl"
    count = records_write(path, records)
    artifact = ModelArtifact(
        name=name[:200],
        format=ModelArtifact.Format.DATASET,
        path=str(path),
        details={"records": count, **(details or {})},
    )
    artifact.size_bytes = artifact.measure_size()
    artifact.save()
    return artifact


# --------------------------------------------------------------------------- upper layers' sources

# name -> fn(user, value) -> records. sessions_app installs "sessions" (a list of session ids the
# user owns) and "preferences" (the user's picks in compare) when the apps are ready.
RecordsSource = Callable[[Any, Any], list[dict[str, Any]]]
_sources: dict[str, RecordsSource] = {}


def source_install(name: str, fn: RecordsSource) -> None:
    _sources[name] = fn


def records_from(name: str, user: Any, value: Any) -> list[dict[str, Any]]:
    """Records from an installed source; DatasetError when it is not installed or finds nothing."""
    if name not in _sources:
        raise DatasetError(f"{name} cannot be used here (no source installed)")
    return _sources[name](user, value)
