"""An object's bytes as an HTTP response: streamed, with `Range` (206, or 416 when unsatisfiable), `ETag`
and `Last-Modified` with `If-None-Match`/`If-Modified-Since` (304), `If-Range`, and the safety headers:
`X-Content-Type-Options: nosniff` always, and `Content-Disposition: attachment` for types a browser would run
(HTML, SVG, XML, scripts)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC
from email.utils import format_datetime, parsedate_to_datetime
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from kilnbase.storage import content_types
from kilnbase.storage.service import StoredObject


def _byte_range(header: str, size: int) -> tuple[int, int] | bool | None:
    """(start, end exclusive) of a single `bytes=` range; None to serve the whole object (absent, several
    ranges, or a unit we do not serve); False when unsatisfiable."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if first == "":
            suffix = int(last)
            if suffix <= 0:
                return False
            return (max(0, size - suffix), size) if size else False
        start = int(first)
        end = int(last) + 1 if last else size
    except ValueError:
        return None
    if start < 0 or start >= size or end <= start:
        return False
    return start, min(end, size)


def _matches(if_none_match: str, etag: str) -> bool:
    candidates = [part.strip().removeprefix("W/") for part in if_none_match.split(",")]
    return "*" in candidates or etag in candidates


def object_response(
    request: Request,
    stored: StoredObject,
    read: Callable[[StoredObject, int, int], AsyncIterator[bytes]],
    *,
    private: bool,
) -> Response:
    mime = stored.mime_type or content_types.OCTET_STREAM
    etag = f'"{stored.etag}"' if stored.etag else None
    modified = stored.uploaded_at.astimezone(UTC).replace(microsecond=0)
    headers = {
        "accept-ranges": "bytes",
        "x-content-type-options": "nosniff",
        "last-modified": format_datetime(modified, usegmt=True),
    }
    if etag:
        headers["etag"] = etag
    if private:
        headers["cache-control"] = "private, no-store"
    if content_types.is_unsafe(mime):
        filename = stored.key.rsplit("/", 1)[-1]
        headers["content-disposition"] = f"attachment; filename*=UTF-8''{quote(filename, safe='')}"
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None:
        if etag and _matches(if_none_match, etag):
            return Response(status_code=304, headers=headers)
    elif (since := request.headers.get("if-modified-since")) is not None:
        try:
            if modified <= parsedate_to_datetime(since):
                return Response(status_code=304, headers=headers)
        except (TypeError, ValueError):
            pass
    start, end, status = 0, stored.size, 200
    range_header = request.headers.get("range")
    if_range = request.headers.get("if-range")
    if range_header and (if_range is None or (etag is not None and if_range.strip() == etag)):
        wanted = _byte_range(range_header, stored.size)
        if wanted is False:
            headers["content-range"] = f"bytes */{stored.size}"
            return Response(status_code=416, headers=headers)
        if isinstance(wanted, tuple):
            start, end = wanted
            status = 206
            headers["content-range"] = f"bytes {start}-{end - 1}/{stored.size}"
    headers["content-length"] = str(end - start)
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers, media_type=mime)
    return StreamingResponse(read(stored, start, end), status_code=status, headers=headers, media_type=mime)
