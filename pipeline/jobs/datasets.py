"""Training data: the chat-records format, its line-by-line check, and dataset artifacts.

A dataset artifact is a JSONL file, one conversation per line, in the shape OpenAI's and most
fine-tuning tools take: ``{"messages": [{"role": "system"|"user"|"assistant", "content": "..."}]}``
(other keys, such as a synthesized example's ``intent`` and ``slots``, are kept and ignored).
Uploads may also use ms-swift's ``{"query", "response"[, "system"]}`` rows or preference pairs
``{"prompt", "chosen", "rejected"}`` (trained on prompt -> chosen); both are stored as messages.

Where the rows come from:

- ``self_cognition_records``: ms-swift's self-cognition shape (``query``, ``response``, ``tag``
  zh/en with ``{{NAME}}`` / ``{{AUTHOR}}``), from ``data/self_cognition.jsonl``;
- an upload (``POST /api/datasets/``), checked line by line as it arrives (``RecordsStream``, fed
  by ``pipeline.jobs.uploads``): the first bad line is named;
- what users did in chat (``pipeline.training``): sessions a user picked, replies picked in
  compare.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.db import IntegrityError, transaction

from inference.errors import PlatformError
from inference.models import ModelArtifact

DATA_DIR = Path(__file__).resolve().parent / "data"
SELF_COGNITION_FILE = DATA_DIR / "self_cognition.jsonl"
ROLES = ("system", "user", "assistant")
MAX_LINE_BYTES = 1_000_000
MAX_RECORDS = 200_000


class DatasetError(PlatformError):
    """Rows that cannot be trained on; ``line`` is the 1-based line of an upload when known (then
    ``str()`` starts with it, ``message`` does not)."""

    default_code = "invalid_dataset"

    def __init__(self, message: str, *, line: int | None = None, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.line = line

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message

    def payload(self) -> dict[str, Any]:
        body = super().payload()
        if self.line:
            body["line"] = self.line
        return body


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


def record_from_line(raw: bytes | str, number: int) -> dict[str, Any] | None:
    """One JSONL line (its newline may be left on) as a record; None for a blank line; DatasetError
    naming line ``number`` when it is not a record."""
    if len(raw) > MAX_LINE_BYTES:
        raise DatasetError(f"longer than {MAX_LINE_BYTES} bytes", line=number)
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError:
        raise DatasetError("not UTF-8 text", line=number) from None
    if not text.strip():
        return None
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise DatasetError(f"not valid JSON ({exc})", line=number) from None
    try:
        return record_normalize(obj)
    except DatasetError as exc:
        raise DatasetError(exc.message, line=number) from None


def records_parse(lines: Iterable[bytes | str]) -> list[dict[str, Any]]:
    """JSONL lines as records; the first bad line raises DatasetError naming it. Blank lines skip."""
    records = []
    for number, raw in enumerate(lines, start=1):
        record = record_from_line(raw, number)
        if record is None:
            continue
        records.append(record)
        if len(records) > MAX_RECORDS:
            raise DatasetError(f"more than {MAX_RECORDS} records", line=number)
    if not records:
        raise DatasetError("the file holds no records")
    return records


class RecordsStream:
    """JSONL checked as its bytes arrive, in pieces of any size (an upload's chunks): each whole
    line is checked as ``records_parse`` checks it and written to ``out`` as a normalized record.
    Only the line being received is held in memory (at most MAX_LINE_BYTES); the first bad line
    raises DatasetError naming it, and ``finish`` checks the last line and that there was one record."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.records = 0
        self.lines = 0
        self._pending = bytearray()

    def feed(self, data: bytes) -> None:
        scan = len(self._pending)  # the bytes before it hold no newline
        self._pending += data
        start = 0
        while (end := self._pending.find(b"\n", scan)) != -1:
            self._line(bytes(self._pending[start:end]))
            start = scan = end + 1
        del self._pending[:start]
        if len(self._pending) > MAX_LINE_BYTES:
            raise DatasetError(f"longer than {MAX_LINE_BYTES} bytes", line=self.lines + 1)

    def finish(self) -> int:
        """The number of records; DatasetError when the last line is bad or there were none."""
        if self._pending:
            self._line(bytes(self._pending))
            self._pending.clear()
        if not self.records:
            raise DatasetError("the file holds no records")
        return self.records

    def _line(self, raw: bytes) -> None:
        self.lines += 1
        record = record_from_line(raw, self.lines)
        if record is None:
            return
        self.records += 1
        if self.records > MAX_RECORDS:
            raise DatasetError(f"more than {MAX_RECORDS} records", line=self.lines)
        self.out.write(json.dumps(record, ensure_ascii=False) + "\n")


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


NAME_MAX = 200  # ModelArtifact.name's max_length
NAME_TRIES = 5


def datasets_dir() -> Path:
    folder = Path(settings.ARTIFACT_ROOT) / "datasets"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def artifact_name_unique(base: str) -> str:
    """``base``, or the first of ``base (2)``, ``base (3)``, ... that no artifact has: artifact
    names are unique, and a second upload or snapshot with the same name is not an error. (Two
    callers racing for one name: the loser's save fails and ``dataset_register`` asks again.)"""
    base = " ".join(base.split())[:NAME_MAX] or "dataset"
    stem = base[: NAME_MAX - 12]  # room for " (123456789)"
    taken = set(ModelArtifact.objects.filter(name__startswith=stem).values_list("name", flat=True))
    if base not in taken:
        return base
    n = 2
    while (name := f"{base[: NAME_MAX - len(f' ({n})')]} ({n})") in taken:
        n += 1
    return name


def dataset_register(path: Path, *, records: int, name: str, details: dict[str, Any] | None = None) -> ModelArtifact:
    """A dataset artifact for a checked JSONL file written under ``datasets_dir()`` (renamed there
    to its final name), under ``name`` or the next free ``name (n)``. The file is removed when no
    row can be made, so a failure leaves nothing behind; the row is made in a savepoint, so this
    may run inside a caller's transaction (job_create's)."""
    final = datasets_dir() / f"{uuid.uuid4().hex[:12]}.jsonl"
    try:
        os.replace(path, final)
        for attempt in range(1, NAME_TRIES + 1):
            # The last try adds a random suffix, which no race takes from it.
            unique = artifact_name_unique(name) if attempt < NAME_TRIES else f"{name[:187]} ({uuid.uuid4().hex[:8]})"
            artifact = ModelArtifact(name=unique, format=ModelArtifact.Format.DATASET, path=str(final),
                                     details={"records": records, **(details or {})})  # fmt: skip
            artifact.size_bytes = artifact.measure_size()
            try:
                with transaction.atomic():
                    artifact.save()
                return artifact
            except IntegrityError:
                if attempt == NAME_TRIES:
                    raise
        raise IntegrityError("no free name")  # not reached: the last try returns or raises
    except BaseException:
        Path(path).unlink(missing_ok=True)
        final.unlink(missing_ok=True)
        raise


def dataset_save(records: list[dict[str, Any]], *, name: str, details: dict[str, Any] | None = None) -> ModelArtifact:
    """Store checked records as a new dataset artifact under ``ARTIFACT_ROOT/datasets``, named
    ``name`` or the next free ``name (n)``; nothing is left behind when it fails."""
    partial = datasets_dir() / f".{uuid.uuid4().hex[:12]}.jsonl.partial"
    try:
        count = records_write(partial, records)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return dataset_register(partial, records=count, name=name, details=details)
