"""Dataset uploads (``POST /api/datasets/``) checked and bounded while the body is read.

- **Bounded.** A Content-Length that cannot fit the limit answers 413 before a byte of the body
  is read; otherwise ``DatasetUploadHandler`` counts the file's bytes as they come and refuses
  (413) the moment they pass ``DATASET_MAX_BYTES``, leaving the rest of the body unread.
  (Without a Content-Length, Django and DRF read no multipart body at all.)
- **Streamed.** Each chunk goes through ``datasets.RecordsStream``: lines are checked as they
  arrive and written, normalized, to a temporary file beside the datasets (never held in memory);
  the first bad line answers 400 naming it, at once.
- **Nothing left behind.** The temporary file is removed on any refusal, on an interrupted body,
  and when the request ends without ``dataset_register`` having taken it.
- **Permission first.** The parser runs while DRF authenticates a browser (its CSRF check reads the
  form), before the view's permission check: it asks the view's permission itself, so a user who
  may not upload gets 403 before the body is read.

The errors are ``UploadError``s; the view turns them into its JSON answer (``body()``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler
from django.http.multipartparser import MultiPartParser as DjangoMultiPartParser
from django.http.multipartparser import MultiPartParserError
from rest_framework import exceptions
from rest_framework.parsers import DataAndFiles, MultiPartParser

from pipeline.jobs import datasets

FIELD = "file"
# Room in the body for what is not the file: the multipart boundaries and part headers, and the
# ``name`` field (at most 200 characters). A Content-Length beyond DATASET_MAX_BYTES + this cannot
# carry a file within the limit.
FORM_OVERHEAD_BYTES = 16 * 1024


class UploadError(Exception):
    """An upload refused: ``status`` 413 (too large) or 400 (not a dataset), naming the field."""

    def __init__(self, message: str, *, status: int = 400, code: str = "invalid_dataset", line: int | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.line = line

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "field": FIELD, "message": f"{FIELD}: {self.message}"}
        if self.line:
            body["line"] = self.line
        return body


def too_large(limit: int) -> UploadError:
    return UploadError(f"larger than {limit} bytes", status=413, code="too_large")


class CheckedUpload(UploadedFile):
    """A JSONL upload checked line by line: ``path`` (normalized records, ``records`` of them) is
    a temporary file that ``close()`` removes unless ``dataset_register`` moved it into place.
    Django closes every uploaded file when the request ends, so an unused one never stays."""

    def __init__(self, path: Path, *, name: str, size: int, records: int, content_type: str) -> None:
        super().__init__(file=None, name=name, content_type=content_type, size=size)
        self.path = path
        self.records = records

    def open(self, mode: str | None = None, *args: Any, **kwargs: Any) -> CheckedUpload:
        raise NotImplementedError("read the records at .path")

    def close(self) -> None:
        self.path.unlink(missing_ok=True)


class DatasetUploadHandler(FileUploadHandler):
    """The only upload handler of a dataset upload: counts, checks and writes the ``file`` part."""

    chunk_size = 64 * 1024

    def __init__(self, request: Any = None, *, limit: int) -> None:
        super().__init__(request)
        self.limit = limit
        self.received = 0  # bytes of the file handed to this handler, for the tests
        self._path: Path | None = None
        self._out: Any = None
        self._stream: datasets.RecordsStream | None = None
        self._done = False

    def new_file(self, field_name: str, *args: Any, **kwargs: Any) -> None:
        super().new_file(field_name, *args, **kwargs)
        if field_name != FIELD:
            self.discard()
            raise UploadError(f"unexpected file field {field_name!r}: send the JSONL file as {FIELD!r}")
        if self._path is not None or self._done:
            self.discard()
            raise UploadError("send one file at a time")
        fd, name = tempfile.mkstemp(prefix=".upload-", suffix=".jsonl.partial", dir=datasets.datasets_dir())
        self._path = Path(name)
        self._out = os.fdopen(fd, "w", encoding="utf-8")
        self._stream = datasets.RecordsStream(self._out)

    def receive_data_chunk(self, raw_data: bytes, start: int) -> None:
        self.received += len(raw_data)
        if self.received > self.limit:
            self.discard()
            raise too_large(self.limit)
        assert self._stream is not None
        try:
            self._stream.feed(raw_data)
        except datasets.DatasetError as exc:
            self.discard()
            raise UploadError(str(exc), line=exc.line) from None
        return None  # the chunk is used up: no later handler gets it

    def file_complete(self, file_size: int) -> CheckedUpload:
        assert self._stream is not None and self._path is not None
        try:
            records = self._stream.finish()
        except datasets.DatasetError as exc:
            self.discard()
            raise UploadError(str(exc), line=exc.line) from None
        self._out.close()
        upload = CheckedUpload(self._path, name=self.file_name or "upload.jsonl", size=file_size, records=records,
                               content_type=self.content_type or "application/jsonl")  # fmt: skip
        self._path, self._out, self._stream, self._done = None, None, None, True
        return upload

    def upload_interrupted(self) -> None:
        self.discard()

    def discard(self) -> None:
        """Close and remove the file being written, if any."""
        if self._out is not None:
            self._out.close()
        if self._path is not None:
            self._path.unlink(missing_ok=True)
        self._path, self._out, self._stream = None, None, None


class DatasetMultiPartParser(MultiPartParser):
    """DRF's multipart parser with ``DatasetUploadHandler`` as the only upload handler.

    The view names ``upload_refusal(user) -> str | None``: asked before the body is read, with the
    user Django's session or DRF's authentication found (``request._request.user``: DRF sets it
    after authenticating; during a browser's CSRF check it is the session's user)."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: dict[str, Any] | None = None) -> Any:
        context = parser_context or {}
        request, view = context["request"], context.get("view")
        user = getattr(request._request, "user", None)
        refusal = view.upload_refusal(user) if view is not None and hasattr(view, "upload_refusal") else None
        if refusal is not None:
            if not (user and user.is_authenticated):
                raise exceptions.NotAuthenticated()
            raise exceptions.PermissionDenied(refusal)
        limit = int(settings.DATASET_MAX_BYTES)
        meta = request.META.copy()
        try:
            length = int(meta.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > limit + FORM_OVERHEAD_BYTES:
            raise too_large(limit)  # before reading a byte of it
        meta["CONTENT_TYPE"] = media_type
        handler = DatasetUploadHandler(request._request, limit=limit)
        try:
            parser = DjangoMultiPartParser(meta, stream, [handler], context.get("encoding", settings.DEFAULT_CHARSET))
            data, files = parser.parse()
        except MultiPartParserError as exc:
            handler.discard()
            raise exceptions.ParseError(f"Multipart form parse error - {exc}") from None
        except BaseException:
            handler.discard()  # a dropped connection mid-file, say
            raise
        return DataAndFiles(data, files)
