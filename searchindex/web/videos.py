"""Videos on the page: a video file streamed by id with HTTP range requests, and frames for thumbnails.

The same rules as for images (see :mod:`.files`): a file is reached only through
its catalog row's id, never a path, and only while it is still the file that was
indexed.  Browsers play an HTML5 ``<video>`` from the matched second by asking
for byte ranges; a request without a ``Range`` header gets the whole file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from PIL import Image

from .files import StaleFileError, open_indexed

if TYPE_CHECKING:
    from ..store.catalog.records import ImageDetails
    from .app import WebApp

__all__ = ["VIDEO_MIME", "byte_range", "frame_picture", "video_router"]

VIDEO_MIME = {".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime", ".webm": "video/webm",
              ".mkv": "video/x-matroska", ".avi": "video/x-msvideo", ".3gp": "video/3gpp", ".mts": "video/mp2t",
              ".m2ts": "video/mp2t", ".mpg": "video/mpeg", ".mpeg": "video/mpeg", ".wmv": "video/x-ms-wmv"}

_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$")


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The (first, last) byte, inclusive, that a ``Range`` header asks of a ``size``-byte file.

    ``None``: no header, or one this server answers with the whole file (several ranges).

    Raises:
        ValueError: a range that lies outside the file (answered 416).
    """
    if not header or "," in header:
        return None
    m = _RANGE.match(header)
    if not m or not (m.group(1) or m.group(2)):
        return None
    first_s, last_s = m.groups()
    if not first_s:  # "bytes=-500": the last 500 bytes
        suffix = int(last_s)
        if suffix == 0:
            raise ValueError("an empty suffix range")
        return max(0, size - suffix), size - 1
    first = int(first_s)
    last = min(int(last_s), size - 1) if last_s else size - 1
    if first >= size or last < first:
        raise ValueError(f"bytes {first}-{last_s} of a {size}-byte file")
    return first, last


def frame_picture(image: ImageDetails, seconds: float, size: int) -> Image.Image:
    """The frame of an indexed video at ``seconds``, at most ``size`` pixels on its shorter side.

    Raises:
        StaleFileError: the file is gone, changed since it was indexed, or cannot be decoded.
    """
    from ..models.video import frame_at

    with open_indexed(image):  # the same checks as an image: still the indexed file
        pass
    try:
        return frame_at(image.path, seconds, side=size)
    except ImportError:
        raise StaleFileError("cannot decode: install the optional extra with pip install 'searchindex[video]'") \
            from None
    except Exception as exc:
        raise StaleFileError(f"cannot decode: {getattr(exc, 'reason', exc)}") from None


def video_router(state: WebApp) -> APIRouter:
    """``GET /api/images/{id}/video``: an indexed video's file, with range requests."""
    router = APIRouter(prefix="/api/images", tags=["images"])

    @router.get("/{image_id:int}/video")
    async def video(request: Request, image_id: int) -> Response:
        """An indexed video's file for an HTML5 ``<video>`` (206 for a ``Range`` request; 404 for a photo)."""
        from .api import _image_or_404, error_response

        details = await state.run(_image_or_404, state, image_id)
        if details.format != "video":
            return error_response(404, f"image {image_id} is not a video")
        try:
            handle = await state.run(open_indexed, details)
        except StaleFileError as exc:
            return error_response(404, f"the file of image {image_id} cannot be served: {exc}")
        size = details.size
        try:
            span = byte_range(request.headers.get("range"), size)
        except ValueError:
            handle.close()
            return Response(status_code=416, headers={"Content-Range": f"bytes */{size}"})
        first, last = span if span is not None else (0, size - 1)

        def chunks() -> Iterator[bytes]:
            with handle:
                handle.seek(first)
                left = last - first + 1
                while left > 0:
                    block = handle.read(min(1 << 20, left))
                    if not block:
                        break
                    left -= len(block)
                    yield block

        ext = os.path.splitext(details.path)[1].lower()
        headers = {
            "Content-Length": str(last - first + 1), "Accept-Ranges": "bytes", "ETag": f'"{details.sha256[:32]}"',
            "Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'",
        }
        if span is not None:
            headers["Content-Range"] = f"bytes {first}-{last}/{size}"
        return StreamingResponse(chunks(), status_code=206 if span is not None else 200,
                                 media_type=VIDEO_MIME.get(ext, "application/octet-stream"), headers=headers)

    return router
