"""Image transforms on download: `?width=&height=&resize=cover|contain|fill&format=webp|avif|png|jpeg`
and `&quality=` on an image object's URL return the transformed image, cached on disk (bounded) under the
object's version, so a replaced object never serves an old rendition.

Done with Pillow. Measured on this machine kind (a 4000x3000 JPEG to 800x600, mean of 5): JPEG out
Pillow 68 ms / pyvips 40 ms, WebP 141 / 107 ms, AVIF 616 / 1254 ms. pyvips is faster for JPEG and WebP
but needs the 40 MB `pyvips-binary` libvips bundle besides; Pillow is one wheel that already decodes and
encodes every format asked for (AVIF included since Pillow 11.2), guards against decompression bombs, and
with JPEG draft mode decodes a large photo at the scale it needs. So Pillow.

Limits: the source at most `MAX_SOURCE_BYTES` and `MAX_INPUT_PIXELS`, the output at most
`MAX_DIMENSION` pixels a side; at most two transforms run at once (each in a worker thread); the cache is
pruned, oldest first, past `CACHE_BYTES`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import warnings
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.to_thread
from PIL import Image, ImageOps

from kilnbase.http.errors import ApiError
from kilnbase.storage.whole_numbers import is_whole_number

MAX_SOURCE_BYTES = 32 * 1024 * 1024
MAX_INPUT_PIXELS = 50_000_000
MAX_DIMENSION = 4096
CACHE_BYTES = 512 * 1024 * 1024
FORMATS = {
    "webp": ("WEBP", "image/webp"),
    "avif": ("AVIF", "image/avif"),
    "png": ("PNG", "image/png"),
    "jpeg": ("JPEG", "image/jpeg"),
    "jpg": ("JPEG", "image/jpeg"),
}
TRANSFORMABLE = frozenset(
    {"image/jpeg", "image/png", "image/webp", "image/gif", "image/avif", "image/bmp", "image/tiff"}
)
_PARAMS = ("width", "height", "resize", "format", "quality")

Image.MAX_IMAGE_PIXELS = MAX_INPUT_PIXELS


#: For an object that cannot be transformed: it can still be read.
AS_STORED = "Read the object without width, height, resize, format and quality to get it as stored."


def _bad(message: str, next_actions: str) -> ApiError:
    return ApiError(400, "STORAGE_INVALID_PARAMETER", message, next_actions)


@dataclass(frozen=True)
class Transform:
    width: int | None
    height: int | None
    resize: str
    format: str | None
    quality: int

    @staticmethod
    def wanted(query: Mapping[str, str]) -> bool:
        return any(name in query for name in _PARAMS)

    @staticmethod
    def parse(query: Mapping[str, str]) -> Transform:
        def dimension(name: str) -> int | None:
            raw = query.get(name)
            if raw is None or raw == "":
                return None
            if not is_whole_number(raw) or not 1 <= int(raw) <= MAX_DIMENSION:
                raise _bad(
                    f"'{name}' must be an integer from 1 to {MAX_DIMENSION}.",
                    f"Send {name} in pixels, or leave it out to keep the image's proportions.",
                )
            return int(raw)

        resize = query.get("resize", "cover") or "cover"
        if resize not in ("cover", "contain", "fill"):
            raise _bad(
                "'resize' must be cover, contain or fill.",
                "Send one of those, or leave resize out for cover.",
            )
        fmt = (query.get("format") or "").lower() or None
        if fmt is not None and fmt not in FORMATS:
            raise _bad(
                "'format' must be webp, avif, png or jpeg.",
                "Send one of those, or leave format out to keep the image's own.",
            )
        quality_raw = query.get("quality") or "80"
        if not is_whole_number(quality_raw) or not 1 <= int(quality_raw) <= 100:
            raise _bad(
                "'quality' must be an integer from 1 to 100.", "Send one, or leave quality out for 80."
            )
        return Transform(dimension("width"), dimension("height"), resize, fmt, int(quality_raw))

    def key(self, blob_id: str) -> str:
        text = f"{blob_id}|{self.width}|{self.height}|{self.resize}|{self.format}|{self.quality}"
        return hashlib.sha256(text.encode()).hexdigest()[:40]


def render(source: bytes, transform: Transform, source_type: str) -> tuple[bytes, str]:
    """The transformed image and its content type (runs in a worker thread)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            opened = Image.open(io.BytesIO(source))
        width, height = opened.size
        if width * height > MAX_INPUT_PIXELS:
            raise _bad(f"The image is larger than {MAX_INPUT_PIXELS} pixels.", AS_STORED)
        box = (transform.width or width, transform.height or height)
        if opened.format == "JPEG":
            opened.draft("RGB", box)  # decode at the scale needed, not the full photo
        image: Image.Image = ImageOps.exif_transpose(opened)
        image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _bad(f"The image is larger than {MAX_INPUT_PIXELS} pixels.", AS_STORED) from None
    except (OSError, ValueError, SyntaxError):
        raise ApiError(
            415, "STORAGE_INVALID_FILE_TYPE", "The object is not an image that can be transformed.", AS_STORED
        ) from None
    name = transform.format or {"image/png": "png", "image/webp": "webp", "image/avif": "avif"}.get(
        source_type, "jpeg"
    )
    pil_format, content_type = FORMATS[name]
    if pil_format == "JPEG":
        image = image.convert("RGB")
    elif image.mode not in ("RGB", "RGBA", "L", "LA"):
        image = image.convert("RGBA")
    if transform.width or transform.height:
        if transform.width and transform.height:
            size = (transform.width, transform.height)
            if transform.resize == "cover":
                image = ImageOps.fit(image, size, Image.Resampling.LANCZOS)
            elif transform.resize == "contain":
                image = ImageOps.contain(image, size, Image.Resampling.LANCZOS)
            else:
                image = image.resize(size, Image.Resampling.LANCZOS)
        else:
            scale = (
                (transform.width or 0) / image.width
                if transform.width
                else (transform.height or 0) / image.height
            )
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            if max(size) > MAX_DIMENSION:
                # The side that follows from a thin image's proportions: gigabytes of pixels otherwise.
                raise _bad(
                    f"The transformed image would be {size[0]}x{size[1]} pixels; each side may be at most "
                    f"{MAX_DIMENSION}.",
                    "Send a smaller width or height, or both with resize=contain to fit the image in a box.",
                )
            image = image.resize(size, Image.Resampling.LANCZOS)
    out = io.BytesIO()
    options: dict[str, object] = (
        {"quality": transform.quality} if pil_format in ("JPEG", "WEBP", "AVIF") else {}
    )
    image.save(out, pil_format, **options)
    return out.getvalue(), content_type


class TransformCache:
    """Rendered images on disk, named by object version and parameters; pruned oldest first."""

    def __init__(self, root: Path, limit_bytes: int = CACHE_BYTES) -> None:
        self.root = root
        self.limit = limit_bytes
        self._slots = anyio.Semaphore(2)

    def _path(self, key: str) -> Path:
        return self.root / key

    def _get(self, key: str) -> tuple[bytes, str] | None:
        path = self._path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        with contextlib.suppress(OSError):
            os.utime(path)
        content_type, _, body = data.partition(b"\n")
        return body, content_type.decode()

    def _put(self, key: str, body: bytes, content_type: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        temporary = self.root / f".{key}.{os.getpid()}.tmp"
        temporary.write_bytes(content_type.encode() + b"\n" + body)
        os.replace(temporary, self._path(key))
        self._prune()

    def _prune(self) -> None:
        entries = []
        total = 0
        for entry in os.scandir(self.root):
            with contextlib.suppress(FileNotFoundError):
                stat = entry.stat()
                entries.append((stat.st_mtime, stat.st_size, entry.path))
                total += stat.st_size
        if total <= self.limit:
            return
        for _mtime, size, path in sorted(entries):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            total -= size
            if total <= self.limit * 0.9:
                break

    async def rendered(
        self, key: str, load: Callable[[], Awaitable[bytes]], transform: Transform, source_type: str
    ) -> tuple[bytes, str]:
        """The cached rendition, or a new one (at most two rendered at once, each in a worker thread)."""
        cached = await anyio.to_thread.run_sync(self._get, key)
        if cached is not None:
            return cached
        async with self._slots:
            source = await load()
            body, content_type = await anyio.to_thread.run_sync(render, source, transform, source_type)
            await anyio.to_thread.run_sync(self._put, key, body, content_type)
        return body, content_type
