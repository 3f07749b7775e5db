"""Search by any picture: ``POST /api/search/image`` with the image as the request body.

The picture is decoded and encoded in memory and searched like an example image; it is not
stored and not added to the index.  It meets the limits indexing applies to a file (size,
pixels, formats: :func:`~searchindex.models.images.decode_image`), with the same reasons when
it fails.  The body is the raw file (``Content-Type: image/...`` or
``application/octet-stream``): a type a page elsewhere cannot send without a CORS preflight,
which this server never grants (see :mod:`searchindex.web.security`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from ..errors import QueryError
from ..fileio import DEFAULT_MAX_FILE_BYTES
from ..frontend.params import example_ids, search_params
from .api import error_response, json_response, results_page

if TYPE_CHECKING:
    from .app import WebApp

__all__ = ["upload_router"]


async def _body(request: Request, limit: int) -> bytes | None:
    """The request body, or ``None`` once it passes ``limit`` bytes (reading stops there)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
    return b"".join(parts)


def upload_router(state: WebApp, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> APIRouter:
    """``POST /api/search/image`` over ``state``'s index."""
    router = APIRouter(prefix="/api", tags=["search"])

    @router.post("/search/image")
    async def search_by_picture(
        request: Request,
        k: Annotated[str | None, Query(description="Results per page (default 10).")] = None,
        offset: Annotated[str | None, Query(description="Results to skip: paging.")] = None,
        path: list[str] = Query([]), exclude: list[str] = Query([]), camera: list[str] = Query([]),  # noqa: B008
        min_width: str | None = None, min_height: str | None = None, after: str | None = None,
        before: str | None = None, tag: str | None = None, threshold: str | None = None,
        min_score: str | None = None, sort: str = "score",
        like: list[str] = Query([]), unlike: list[str] = Query([]),  # noqa: B008
    ) -> Response:
        """Images like the picture sent as the body (not stored); results as ``GET /api/search``."""
        data = await _body(request, max_bytes)
        if data is None:
            return error_response(413, f"the picture is larger than {max_bytes // 2**20:,} MB, the limit for "
                                       "indexed files")
        if not data:
            return error_response(400, "send the picture as the request body")
        # The options are checked as for any search; the text stands in for the picture, never used.
        params = search_params(
            state.index, "picture", k=k, offset=offset, paths=path, exclude=exclude, min_width=min_width,
            min_height=min_height, after=after, before=before, cameras=camera, tag=tag, threshold=threshold,
            min_score=min_score, sort=sort, like=example_ids(like, "--like", "like"),
            unlike=example_ids(unlike, "--unlike", "unlike"))

        def run() -> list[dict[str, Any]]:
            from ..models.images import decode_image

            try:
                image = decode_image(data, "the picture").image
            except Exception as exc:
                raise QueryError(f"cannot use this picture: {getattr(exc, 'reason', exc)}") from None

            def encode_and_search() -> list[dict[str, Any]]:
                vector = np.asarray(state.index.models.encoder.encode_images([image])[0])
                found = state.index.search_vector(vector, request=params.request)[params.offset:]
                return [r.to_dict() for r in found]

            return state.locked(encode_and_search)

        results = await state.run(run)
        return json_response(results_page(results, params))

    return router
