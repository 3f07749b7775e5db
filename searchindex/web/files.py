"""Reading indexed image files safely, and their thumbnails (cached on disk by content hash).

A file is served only through the catalog row of its ``image_id``, and only
while it is still the file that was indexed: a regular file with the recorded
size and modification time.  A file since replaced (by a symlink to something
else, or any other content) or removed is not served: the caller answers 404,
or a placeholder for a thumbnail.
"""

from __future__ import annotations

import io
import logging
import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..models.images import decode_image

if TYPE_CHECKING:
    from ..store.catalog.records import ImageDetails

__all__ = ["THUMBNAIL_SIZES", "StaleFileError", "ThumbnailCache", "file_problem", "open_indexed", "thumbnail_size"]

log = logging.getLogger(__name__)

#: Thumbnail edge lengths made; a request for another size gets the next larger one.
THUMBNAIL_SIZES = (128, 256, 512, 1024)

_MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif", "BMP": "image/bmp",
         "TIFF": "image/tiff", "AVIF": "image/avif", "HEIF": "image/heif", "MPO": "image/jpeg"}


class StaleFileError(Exception):
    """The file of an image is gone, unreadable, or no longer the file that was indexed."""


def mime_type(fmt: str) -> str:
    return _MIME.get(fmt.upper(), "application/octet-stream")


def open_indexed(image: ImageDetails) -> io.BufferedReader:
    """Open the file of an indexed image for reading, if it is still the indexed file.

    Raises:
        StaleFileError: missing, not a regular file, or its size or mtime differ from the catalog's.
    """
    try:
        fd = os.open(image.path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise StaleFileError(f"cannot open: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise StaleFileError("not a regular file")
        if st.st_size != image.size or st.st_mtime_ns != image.mtime_ns:
            raise StaleFileError("changed since it was indexed (run searchindex index)")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def file_problem(image: ImageDetails) -> str | None:
    """Why the file of ``image`` cannot be served (gone, changed since indexing), or ``None``."""
    try:
        open_indexed(image).close()
    except StaleFileError as exc:
        return str(exc)
    return None


def thumbnail_size(requested: int | None) -> int:
    """The thumbnail size made for a request: the smallest of THUMBNAIL_SIZES at least that big."""
    if requested is None:
        return THUMBNAIL_SIZES[1]
    return next((s for s in THUMBNAIL_SIZES if s >= requested), THUMBNAIL_SIZES[-1])


@dataclass(frozen=True)
class Thumbnail:
    data: bytes
    media_type: str
    etag: str


class ThumbnailCache:
    """Thumbnails made on demand, kept as files ``<folder>/<sha[:2]>/<sha>-<size>.<ext>``.

    Keyed by content hash, so copies of one picture share a thumbnail and an
    edited file gets a new one.  The folder is bounded: past ``max_bytes`` the
    least recently written thumbnails go.  Deleting it at any time is safe.
    """

    def __init__(self, folder: Path, max_bytes: int = 512 * 2**20, quality: int = 80) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.quality = quality
        self._lock = threading.Lock()
        self._total: int | None = None  # bytes in the folder, counted on first write
        from PIL import features

        self._webp = bool(features.check("webp"))
        self._ext = "webp" if self._webp else "jpg"

    def _file(self, sha256: str, size: int, at: str = "") -> Path:
        return self.folder / sha256[:2] / f"{sha256}-{size}{at}.{self._ext}"

    def get(self, image: ImageDetails, size: int, at: float | None = None) -> Thumbnail:
        """The thumbnail of ``image`` at ``size`` (made now when not cached); for a video, of its
        frame at ``at`` seconds (default: its first).

        Raises:
            StaleFileError: the file is gone, changed, or cannot be decoded.
        """
        media = "image/webp" if self._webp else "image/jpeg"
        moment = f"-t{round((at or 0.0) * 1000)}" if image.format == "video" else ""
        etag = f'"{image.sha256[:32]}-{size}{moment}"'
        path = self._file(image.sha256, size, moment)
        with open_indexed(image) as f:  # also before a cached thumbnail: a deleted photo shows as gone
            try:
                return Thumbnail(path.read_bytes(), media, etag)
            except OSError:
                pass
            raw = b"" if image.format == "video" else f.read()
        if image.format == "video":
            from .videos import frame_picture

            img = frame_picture(image, at or 0.0, size)
        else:
            try:
                img = decode_image(raw, image.path, min_side=size).image
            except Exception as exc:
                raise StaleFileError(f"cannot decode: {getattr(exc, 'reason', exc)}") from None
        img.thumbnail((size, size))
        out = io.BytesIO()
        if self._webp:
            img.save(out, "WEBP", quality=self.quality, method=2)
        else:
            img.save(out, "JPEG", quality=self.quality, optimize=True)
        data = out.getvalue()
        self._store(path, data)
        return Thumbnail(data, media, etag)

    def _store(self, path: Path, data: bytes) -> None:
        try:
            # Never with parents=True: an index folder deleted while serving must stay deleted,
            # not come back holding only thumbnails/.
            self.folder.mkdir(exist_ok=True)
            path.parent.mkdir(exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)  # readers see the whole file or none
        except OSError as exc:  # a read-only index folder: serve without caching
            log.info("thumbnail not cached: %s", exc)
            return
        with self._lock:
            if self._total is None:
                self._total = sum(p.stat().st_size for p in self.folder.glob("*/*") if p.is_file())
            else:
                self._total += len(data)
            if self._total > self.max_bytes:
                self._evict()

    def _evict(self) -> None:
        """Drop the oldest thumbnails until the folder is at 80 % of its bound."""
        files = []
        for p in self.folder.glob("*/*"):
            try:
                st = p.stat()
            except OSError:
                continue
            files.append((st.st_mtime, st.st_size, p))
        files.sort()
        total = sum(f[1] for f in files)
        for _, size, p in files:
            if total <= self.max_bytes * 0.8:
                break
            try:
                p.unlink()
                total -= size
            except OSError:
                pass
        self._total = total
