"""``multipart/form-data`` uploads streamed to disk as they arrive, never held in memory whole.

The ``file`` part is written to a partial file chunk by chunk; the small text fields (``purpose``,
``expires_after[...]``) are collected under a size cap. Over-large files are cut off and refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from batch_mcp.sandbox.state import ApiError

MAX_FIELD_BYTES = 64 * 1024


@dataclass
class Upload:
    """What a multipart body held: its text fields, and the file part once written to ``path``."""

    path: Path
    fields: dict[str, str] = field(default_factory=dict)
    file_name: str | None = None
    size: int = 0
    too_large: bool = False


class _FormSink:
    """The parser's callbacks: route each part's bytes to the file on disk or to a text field."""

    def __init__(self, upload: Upload, sink: BinaryIO, max_file_bytes: int) -> None:
        self.upload, self.sink, self.max_file_bytes = upload, sink, max_file_bytes
        self._header_name, self._header_value = bytearray(), bytearray()
        self._disposition: dict[bytes, bytes] = {}
        self._field: bytearray | None = None
        self._field_bytes = 0
        self._is_file = False

    def on_part_begin(self) -> None:
        self._disposition, self._field, self._is_file = {}, None, False

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        if bytes(self._header_name).lower() == b"content-disposition":
            self._disposition = parse_options_header(bytes(self._header_value))[1]
        self._header_name, self._header_value = bytearray(), bytearray()

    def on_headers_finished(self) -> None:
        name = self._disposition.get(b"name", b"").decode(errors="replace")
        if name == "file" and b"filename" in self._disposition and self.upload.file_name is None:
            self._is_file = True
            self.upload.file_name = self._disposition[b"filename"].decode(errors="replace")
        else:
            self._field = bytearray()
            self._field_name = name

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._is_file:
            self.upload.size += end - start
            if self.upload.size > self.max_file_bytes:
                self.upload.too_large = True
            elif not self.upload.too_large:
                self.sink.write(data[start:end])
            return
        self._field_bytes += end - start
        if self._field is not None and self._field_bytes <= MAX_FIELD_BYTES:
            self._field += data[start:end]

    def on_part_end(self) -> None:
        if self._field is not None:
            self.upload.fields[self._field_name] = self._field.decode(errors="replace")

    def callbacks(self) -> dict:
        return {name: getattr(self, name) for name in dir(self) if name.startswith("on_")}


async def read_upload(request: Request, partial_path: Path, max_file_bytes: int) -> Upload:
    """Parse the body, writing its ``file`` part to ``partial_path``; 400 if it is not multipart."""
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise ApiError(400, "The upload must be multipart/form-data with a 'file' part and a 'purpose' field.")
    upload = Upload(partial_path)
    try:
        with partial_path.open("wb", buffering=1 << 20) as sink:
            form = _FormSink(upload, sink, max_file_bytes)
            parser = MultipartParser(boundary, form.callbacks())  # type: ignore[arg-type]
            async for chunk in request.stream():
                parser.write(chunk)
            parser.finalize()
    except MultipartParseError as exc:
        partial_path.unlink(missing_ok=True)
        raise ApiError(400, f"The multipart body could not be parsed: {exc}") from exc
    except BaseException:
        partial_path.unlink(missing_ok=True)
        raise
    return upload
