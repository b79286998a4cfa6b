"""Dataset files: an upload checked and bounded chunk by chunk as it is read (pipeline.jobs.uploads),
and dataset artifacts that take the next free name and leave no file behind when they fail."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from django.db import DatabaseError, transaction
from django.http.multipartparser import MultiPartParser

from inference.models import ModelArtifact
from pipeline.jobs import datasets, uploads

GOOD = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}
LINE = json.dumps(GOOD).encode() + b"\n"
BOUNDARY = "XyZzY"


@pytest.fixture
def root(settings: Any, tmp_path: Path) -> Path:
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    return Path(settings.ARTIFACT_ROOT)


def files_in(root: Path) -> list[str]:
    folder = root / "datasets"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


class CountingStream(io.BytesIO):
    def __init__(self, content: bytes) -> None:
        super().__init__(content)
        self.bytes_read = 0

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        self.bytes_read += len(chunk)
        return chunk


def parse(file_bytes: bytes, limit: int) -> tuple[uploads.DatasetUploadHandler, CountingStream, Any]:
    """Run Django's multipart parser over a body holding ``file_bytes``, with the dataset handler."""
    body = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"\r\n\r\n'.encode()
            + file_bytes + f"\r\n--{BOUNDARY}--\r\n".encode())  # fmt: skip
    stream = CountingStream(body)
    meta = {"CONTENT_TYPE": f"multipart/form-data; boundary={BOUNDARY}", "CONTENT_LENGTH": str(len(body))}
    handler = uploads.DatasetUploadHandler(limit=limit)
    try:
        _post, files = MultiPartParser(meta, stream, [handler]).parse()
    except uploads.UploadError as exc:
        return handler, stream, exc
    return handler, stream, files


def test_the_handler_stops_reading_once_the_file_passes_the_limit(root: Path) -> None:
    body = LINE * 20_000  # 1.7 MB
    handler, stream, refused = parse(body, limit=100_000)
    assert isinstance(refused, uploads.UploadError) and refused.status == 413
    # It refused on the chunk that went over: the rest of the body was never read.
    assert 100_000 < handler.received <= 100_000 + handler.chunk_size
    assert stream.bytes_read <= 100_000 + 3 * handler.chunk_size < len(body)
    assert files_in(root) == []


def test_the_handler_writes_checked_records_to_a_temporary_file_that_closing_removes(root: Path) -> None:
    chunked = LINE * 3000  # many chunks, lines cut across them
    handler, _stream, files = parse(b'{"query": "Who?", "response": "Me."}\r\n\n' + chunked, limit=10**8)
    upload = files["file"]
    assert isinstance(upload, uploads.CheckedUpload) and upload.records == 3001
    assert upload.path.parent == root / "datasets" and upload.path.name.endswith(".partial")
    rows = datasets.records_read(upload.path)
    assert rows[0]["messages"][-1]["content"] == "Me." and len(rows) == 3001
    upload.close()  # the request ended without the view taking it
    assert files_in(root) == []


@pytest.mark.parametrize(
    ("content", "line", "message"),
    [
        (LINE * 2000 + b'{"messages": []}\n' + LINE * 10, 2001, '"messages" must be a non-empty list'),
        (LINE * 5 + b"\xff\xfe\n", 6, "not UTF-8 text"),
        (LINE + b"[1]", 2, "expected a JSON object"),  # the last line, without its newline
        (b"\n\n", None, "the file holds no records"),
        (LINE + b"x" * (datasets.MAX_LINE_BYTES + 10), 2, "longer than"),
    ],
)
def test_a_bad_line_stops_the_upload_naming_it_and_leaves_no_file(
    root: Path, content: bytes, line: int | None, message: str
) -> None:
    _handler, stream, refused = parse(content, limit=10**8)
    assert isinstance(refused, uploads.UploadError) and refused.status == 400
    assert refused.line == line and message in refused.message
    assert files_in(root) == []


def test_the_stream_reads_lines_split_anywhere_as_records_parse_does() -> None:
    content = b'{"prompt": "2+2?", "chosen": "4", "rejected": "5"}\n\n' + LINE * 50
    for size in (1, 7, 64, len(content)):
        out = io.StringIO()
        stream = datasets.RecordsStream(out)
        for i in range(0, len(content), size):
            stream.feed(content[i : i + size])
        assert stream.finish() == 51
        written = [json.loads(line) for line in out.getvalue().splitlines()]
        assert written == datasets.records_parse(io.BytesIO(content))


def test_dataset_save_takes_the_next_free_name(root: Path, db: Any) -> None:
    first = datasets.dataset_save([GOOD], name="Chats of ops: sessions 4")
    second = datasets.dataset_save([GOOD], name="Chats of ops: sessions 4")
    third = datasets.dataset_save([GOOD], name="Chats of ops: sessions 4")
    assert [a.name for a in (first, second, third)] == [
        "Chats of ops: sessions 4", "Chats of ops: sessions 4 (2)", "Chats of ops: sessions 4 (3)"
    ]  # fmt: skip
    assert len({a.path for a in (first, second, third)}) == 3
    long = datasets.dataset_save([GOOD], name="x" * 300)
    again = datasets.dataset_save([GOOD], name="x" * 300)
    assert len(long.name) == len(again.name) == 200 and again.name.endswith(" (2)")
    assert sorted(files_in(root)) == sorted(Path(a.path).name for a in ModelArtifact.objects.all())


def test_a_name_lost_to_a_race_is_asked_again_inside_the_callers_transaction(
    root: Path, db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken = datasets.dataset_save([GOOD], name="picks")
    monkeypatch.setattr(datasets, "artifact_name_unique", lambda base: "picks")  # always the taken one
    with transaction.atomic():  # as in job_create: a failed insert must not spoil the transaction
        made = datasets.dataset_save([GOOD], name="picks")
        assert made.name.startswith("picks (") and made.name != taken.name
        assert ModelArtifact.objects.count() == 2
    assert sorted(files_in(root)) == sorted(Path(a.path).name for a in (taken, made))


def test_a_dataset_whose_row_cannot_be_made_leaves_no_file(
    root: Path, db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(self: ModelArtifact, *args: Any, **kwargs: Any) -> None:
        raise DatabaseError("the database went away")

    monkeypatch.setattr(ModelArtifact, "save", fail)
    with pytest.raises(DatabaseError):
        datasets.dataset_save([GOOD], name="lost")
    assert files_in(root) == []
