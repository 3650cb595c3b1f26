"""An upload's body, streamed as it arrives: a multipart form's `file` field (what the SDK and InsForge's REST
routes send), or the raw body itself (any other content type). Nothing is buffered beyond one network
chunk; the blob store writes the bytes and the meter enforces the size limit on every chunk.

Multipart is parsed by python-multipart's push parser (Starlette's `request.form()` would first spool the
whole file to a temporary file of its own, a second copy of every byte).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header

from kilnbase.storage.names import invalid

#: Bytes of form fields other than the file kept (the SDK sends none; anything more is refused).
_MAX_FIELD_BYTES = 64 * 1024
_FILE_FIELD = "file"
_WELL_FORMED = "Send a well-formed multipart/form-data body, as an HTTP client's form encoder makes it."


@dataclass
class ReceivedFile:
    filename: str
    claimed_type: str | None


class _FormReader:
    """python-multipart callbacks: the `file` part's bytes are queued in `pending`, other parts bounded."""

    def __init__(self) -> None:
        self.received: ReceivedFile | None = None
        self._header_field = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._in_file = False
        self._other_bytes = 0
        self.pending: list[bytes] = []

    def on_part_begin(self) -> None:
        self._headers = {}
        self._in_file = False

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._header_field.lower()] = self._header_value
        self._header_field = self._header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if name == _FILE_FIELD and b"filename" in options:
            if self.received is not None:
                raise invalid(
                    "Send one file per upload, in the 'file' field.",
                    "Upload each file in a request of its own.",
                )
            content_type = self._headers.get(b"content-type")
            self.received = ReceivedFile(
                options[b"filename"].decode("utf-8", "replace"),
                content_type.decode("latin-1") if content_type else None,
            )
            self._in_file = True

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self.pending.append(data[start:end])
            return
        self._other_bytes += end - start
        if self._other_bytes > _MAX_FIELD_BYTES:
            raise invalid(
                "The form's fields other than 'file' are too large.",
                f"Send only the 'file' field; the other fields may hold {_MAX_FIELD_BYTES // 1024} KiB "
                "in all.",
            )

    def on_part_end(self) -> None:
        self._in_file = False


async def open_upload(
    chunks: AsyncIterator[bytes], content_type: str | None, default_name: str
) -> tuple[ReceivedFile, AsyncIterator[bytes]]:
    """What the client said about the file (read up to the file's part headers), and the file's bytes as
    they arrive. 400 when a form has no `file` field (known only at its end when there is none)."""
    media, options = parse_options_header(content_type or "")
    if media != b"multipart/form-data":
        return ReceivedFile(default_name, content_type), chunks
    boundary = options.get(b"boundary")
    if not boundary:
        raise invalid(
            "The multipart body has no boundary.",
            "Send Content-Type: multipart/form-data; boundary=..., as an HTTP client's form encoder does.",
        )
    reader = _FormReader()
    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": reader.on_part_begin,
            "on_header_field": reader.on_header_field,
            "on_header_value": reader.on_header_value,
            "on_header_end": reader.on_header_end,
            "on_headers_finished": reader.on_headers_finished,
            "on_part_data": reader.on_part_data,
            "on_part_end": reader.on_part_end,
        },
    )
    stream = aiter(chunks)

    def feed(chunk: bytes) -> None:
        try:
            parser.write(chunk)
        except ValueError as exc:  # python-multipart's parse errors
            raise invalid(f"The multipart body is malformed: {exc}", _WELL_FORMED) from None

    async for chunk in stream:
        feed(chunk)
        if reader.received is not None:
            break
    else:
        raise invalid("File is required", "Attach the file as the 'file' field of a multipart form.")
    received = reader.received

    async def file_bytes() -> AsyncIterator[bytes]:
        while True:
            if reader.pending:
                pending, reader.pending = reader.pending, []
                for piece in pending:
                    yield piece
            try:
                chunk = await anext(stream)
            except StopAsyncIteration:
                break
            feed(chunk)
        try:
            parser.finalize()
        except ValueError as exc:
            raise invalid(f"The multipart body is malformed: {exc}", _WELL_FORMED) from None
        for piece in reader.pending:
            yield piece
        if parser.state != MultipartState.END:
            # python-multipart's `finalize` does not check that the form ended: a form cut short would be
            # stored as if whole. Raised after the last bytes, before the upload commits: nothing is kept.
            raise invalid("The multipart body ended before its closing boundary.", _WELL_FORMED)

    return received, file_bytes()
