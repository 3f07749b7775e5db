"""Acting on several images at once: ``POST /api/download`` (a zip of the originals, streamed), and
``POST /api/images/forget`` (images whose files are gone leave the index), and
``POST /api/tags/{label}/images`` (a label put on them by hand), and ``POST /api/images/move``
(their files moved into a folder the user names, after an explicit confirmation; never deleted,
never overwriting: :mod:`searchindex.index.moving`).

Images are named by id, never by path, and only a file that is still the indexed one is put in
(the same check as ``/api/images/{id}/file``); the others are listed in ``MISSING.txt`` inside
the zip.  The zip is written as it is sent (stored, not compressed: photos do not shrink), so
memory stays flat whatever the selection's size.  Like every POST it passes the same-origin check.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Body
from fastapi.responses import Response, StreamingResponse

from ..errors import ParameterError
from .api import json_response
from .files import StaleFileError, open_indexed

if TYPE_CHECKING:
    from ..store.catalog.records import ImageDetails
    from .app import WebApp

__all__ = ["MAX_DOWNLOAD_IMAGES", "selection_router", "zip_stream"]

#: The most images one download takes.
MAX_DOWNLOAD_IMAGES = 10_000
_BLOCK = 1 << 20


class _Pipe:
    """A write-only stream whose bytes are taken out as they come (zipfile writes, the response reads)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data, self.parts = b"".join(self.parts), []
        return data


def _unique(name: str, used: set[str]) -> str:
    stem, ext = os.path.splitext(name)
    n, candidate = 1, name
    while candidate.casefold() in used:
        n += 1
        candidate = f"{stem} ({n}){ext}"
    used.add(candidate.casefold())
    return candidate


def zip_stream(images: list[ImageDetails]) -> Iterator[bytes]:
    """The zip of ``images``' files, in pieces of about a megabyte; gone or changed files listed apart."""
    pipe = _Pipe()
    used: set[str] = set()
    missing: list[str] = []
    with zipfile.ZipFile(pipe, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:  # type: ignore[call-overload]
        for image in images:
            try:
                handle = open_indexed(image)
            except StaleFileError as exc:
                missing.append(f"{image.path}: {exc}")
                continue
            with handle, zf.open(_unique(os.path.basename(image.path), used), "w", force_zip64=True) as out:
                while block := handle.read(_BLOCK):
                    out.write(block)
                    if sum(map(len, pipe.parts)) >= _BLOCK:
                        yield pipe.take()
        if missing:
            zf.writestr(_unique("MISSING.txt", used), "Not included (gone or changed since indexing):\n"
                        + "\n".join(missing) + "\n")
    yield pipe.take()


def selection_router(state: WebApp) -> APIRouter:
    """The routes that act on a selection of images."""
    router = APIRouter(prefix="/api", tags=["images"])

    @router.post("/download")
    async def download(ids: Annotated[list[int], Body(embed=True, description="image_ids, in order")]) -> Response:
        """The original files of ``ids`` as one zip, streamed (files gone since indexing are listed in it)."""
        if not ids:
            raise ParameterError("choose at least one image", "ids")
        if len(ids) > MAX_DOWNLOAD_IMAGES:
            raise ParameterError(f"at most {MAX_DOWNLOAD_IMAGES:,} images at once, not {len(ids):,}", "ids")
        if any(not 0 < i < 2**63 for i in ids):
            raise ParameterError("ids are image_ids from the results (whole numbers above 0)", "ids")
        unique = list(dict.fromkeys(ids))
        images = await state.run(lambda: [state.index.image(i) for i in unique])
        return StreamingResponse(zip_stream(images), media_type="application/zip", headers={
            "Content-Disposition": 'attachment; filename="photos.zip"', "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff"})

    @router.post("/images/forget")
    async def forget(ids: Annotated[list[int], Body(embed=True, description="image_ids")]) -> Response:
        """Remove from the index the images among ``ids`` whose files are gone (never touches a file)."""
        if not ids or any(not 0 < i < 2**63 for i in ids):
            raise ParameterError("ids are image_ids from the results (whole numbers above 0)", "ids")

        def drop() -> list[int]:
            images = [state.index.image(i) for i in dict.fromkeys(ids)]
            dropped = set(state.index.forget_missing([im.path for im in images]))
            return [im.id for im in images if im.path in dropped]

        return json_response({"removed": await state.run(state.locked, drop)})

    @router.post("/images/move")
    async def move(ids: Annotated[list[int], Body(embed=True, description="image_ids")],
                   folder: Annotated[str, Body(embed=True, description="the folder's full path")],
                   confirm: Annotated[bool, Body(embed=True, description="true: the user confirmed the move")] = False,
                   ) -> Response:
        """Move the files of ``ids`` into ``folder`` (made if missing); a name taken there, or a file
        changed since indexing, stays where it is.  The index follows without encoding again."""
        from ..index.moving import move_images

        if not ids or len(ids) > MAX_DOWNLOAD_IMAGES or any(not 0 < i < 2**63 for i in ids):
            raise ParameterError(f"ids are 1 to {MAX_DOWNLOAD_IMAGES:,} image_ids from the results", "ids")
        if not confirm:
            raise ParameterError("moving files needs the user's confirmation (confirm: true)", "confirm")
        report = await state.run(state.locked, lambda: move_images(state.index, ids, folder))
        return json_response(report.to_dict())

    @router.post("/tags/{label}/images")
    async def tag_images(label: str, ids: Annotated[list[int], Body(embed=True, description="image_ids")]) -> Response:
        """Put ``label`` on the images ``ids`` by hand (as :meth:`searchindex.Index.tag_images`); then
        ``search?tag=LABEL`` finds them.  Returns the label and the ids tagged (those still indexed)."""
        if not ids or len(ids) > MAX_DOWNLOAD_IMAGES or any(not 0 < i < 2**63 for i in ids):
            raise ParameterError(f"ids are 1 to {MAX_DOWNLOAD_IMAGES:,} image_ids from the results", "ids")
        tagged = await state.run(state.locked, lambda: state.index.tag_images(list(dict.fromkeys(ids)), label))
        return json_response({"label": label.strip(), "tagged": tagged})

    return router
