"""The JSON API under ``/api``: one router per resource (search, images, the index, concepts).

Every route is a few lines over :class:`searchindex.Index` through the
:class:`~searchindex.web.app.WebApp` state; blocking work runs in its worker
threads.  Errors are JSON objects (``{"error": ..., "parameter": ...}``), the
responses the same text as the CLI's ``--json`` for the same data.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import Response, StreamingResponse

from ..defaults import DEFAULT_DUPLICATE_THRESHOLD
from ..errors import NotFoundError
from ..results import TagCount
from .files import StaleFileError, file_problem, mime_type, open_indexed, thumbnail_size
from .options import query_parameters

if TYPE_CHECKING:
    from ..frontend.params import SearchParams
    from ..store.catalog.records import ImageDetails
    from .app import WebApp

__all__ = ["api_routers", "error_response", "json_response", "results_page"]

log = logging.getLogger(__name__)

_MAX_ID = 2**63 - 1
search_parameters = query_parameters()  # GET /api/search's query parameters, from the options description
_PLACEHOLDER = (
    b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64" width="256" height="256">'
    b'<rect width="64" height="64" fill="#ddd"/><path d="M20 20l24 24M44 20L20 44" stroke="#999" '
    b'stroke-width="4"/></svg>'
)


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """JSON with the standard library's encoder: the same text as the CLI's --json for the same data."""
    return Response(json.dumps(data), status_code=status, media_type="application/json", headers=headers)


def error_response(status: int, message: str, parameter: str | None = None) -> Response:
    """The API's error object: ``{"error": message}``, with the offending ``parameter`` when known."""
    body: dict[str, Any] = {"error": message}
    if parameter is not None:
        body["parameter"] = parameter
    return json_response(body, status)


def results_page(results: list[dict[str, Any]], search: SearchParams) -> dict[str, Any]:
    """A page of search results as the API answers it: the results, where the next page starts
    (``None``: this is the last), and why there are none when there are none."""
    more = search.k is not None and len(results) == search.k
    body: dict[str, Any] = {"results": results, "next_offset": search.offset + len(results) if more else None}
    if not results:
        body["message"] = search.empty_message()
    return body


def api_routers(state: WebApp) -> list[APIRouter]:
    """The API's routers over ``state``, in the order the OpenAPI page lists them."""
    from .browse import browse_router  # it uses this module's responses
    from .people import people_router
    from .selection import selection_router
    from .upload import upload_router
    from .videos import video_router

    return [_search_router(state), upload_router(state), browse_router(state), _image_router(state),
            video_router(state), selection_router(state), _index_router(state), _concept_router(state),
            people_router(state)]


def _image_or_404(state: WebApp, image_id: int) -> ImageDetails:
    if image_id > _MAX_ID:
        raise NotFoundError(f"no image with id {image_id} in this index")
    return state.index.image(image_id)


def _search_router(state: WebApp) -> APIRouter:
    router = APIRouter(prefix="/api", tags=["search"])

    @router.get("/search")
    async def search(params: Annotated[dict[str, Any], Depends(search_parameters)]) -> Response:
        """Search: results with exactly the fields of ``searchindex search --json``, in the same order."""
        # The query parameters are derived from the one description of the search options (web/options.py).
        results, search = await state.run(lambda: state.search(**params))
        return json_response(results_page(results, search))

    return router


def _image_router(state: WebApp) -> APIRouter:
    router = APIRouter(prefix="/api/images", tags=["images"])

    @router.get("/{image_id:int}")
    async def image(image_id: int) -> Response:
        """What the index knows about one image: file facts, date, camera, place, caption, keywords, tags;
        ``file_problem``: why its file cannot be served now (gone, changed), else ``null``."""
        details = await state.run(_image_or_404, state, image_id)
        return json_response({**details.to_dict(), "file_problem": await state.run(file_problem, details)})

    @router.get("/{image_id:int}/thumbnail")
    async def thumbnail(request: Request, image_id: int,
                        size: Annotated[int | None, Query(ge=16, le=4096)] = None,
                        t: Annotated[float | None, Query(ge=0, le=1e7)] = None) -> Response:
        """A thumbnail (WebP, else JPEG; EXIF orientation applied); for a video, its frame at ``t`` seconds;
        a placeholder when the file is unusable."""
        details = await state.run(_image_or_404, state, image_id)
        edge = thumbnail_size(size)
        try:
            thumb = await state.run(state.thumbnails.get, details, edge, t, pool=state.thumbnail_pool)
        except StaleFileError as exc:
            log.info("no thumbnail for %s: %s", details.path, exc)
            return Response(_PLACEHOLDER, media_type="image/svg+xml",
                            headers={"Cache-Control": "no-store", "X-Thumbnail": "placeholder"})
        headers = {"ETag": thumb.etag, "Cache-Control": "private, max-age=86400"}
        if request.headers.get("if-none-match") == thumb.etag:
            return Response(status_code=304, headers=headers)
        return Response(thumb.data, media_type=thumb.media_type, headers=headers)

    @router.get("/{image_id:int}/file")
    async def file(image_id: int) -> Response:
        """The original file, as indexed (404 when it is gone or has changed since)."""
        details = await state.run(_image_or_404, state, image_id)
        try:
            handle = await state.run(open_indexed, details)
        except StaleFileError as exc:
            return error_response(404, f"the file of image {image_id} cannot be served: {exc}")

        def chunks() -> Iterator[bytes]:
            with handle:
                while block := handle.read(1 << 20):
                    yield block

        name = os.path.basename(details.path).encode("ascii", "replace").decode().replace('"', "_")
        return StreamingResponse(chunks(), media_type=mime_type(details.format), headers={
            "Content-Length": str(details.size), "ETag": f'"{details.sha256[:32]}"',
            "Cache-Control": "private, max-age=3600", "Content-Disposition": f'inline; filename="{name}"',
            "X-Content-Type-Options": "nosniff", "Content-Security-Policy": "default-src 'none'",
        })

    return router


def _index_router(state: WebApp) -> APIRouter:
    router = APIRouter(prefix="/api", tags=["index"])

    @router.get("/info")
    async def info() -> Response:
        """The index: model, image count, vector index type and sizes (as ``searchindex info --json``)."""
        return json_response((await state.run(state.index.info)).to_dict())

    @router.get("/tags")
    async def tags() -> Response:
        """Zero-shot labels with how many images carry each (as ``searchindex tags --json``)."""
        counts = await state.run(state.index.tags)
        return json_response({"tags": [TagCount(label, n).to_dict() for label, n in counts]})

    @router.post("/tags")
    async def tag(labels: Annotated[list[str], Body()],
                  templates: Annotated[str, Body(pattern="^(default|single)$")] = "default") -> Response:
        """Define zero-shot labels and tag every image (as ``searchindex tag --labels``); one report per label."""
        from ..enrich.tagging import parse_labels

        names = parse_labels(",".join(labels))
        reports = await state.run(state.locked, lambda: state.index.tag(names, templates=templates))
        return json_response({"labels": [r.to_dict() for r in reports]})

    @router.delete("/tags/{label}")
    async def untag(label: str) -> Response:
        """Forget a label and its tags (as ``searchindex tag --remove``)."""
        if not await state.run(state.locked, lambda: state.index.untag([label])):
            raise NotFoundError(f"no label {label!r} in this index")
        return Response(status_code=204)

    @router.get("/duplicates")
    async def duplicates(threshold: Annotated[float, Query(gt=0, le=1)] = DEFAULT_DUPLICATE_THRESHOLD) -> Response:
        """Groups of near-identical images, best copy first (as ``searchindex duplicates --json``)."""
        groups = await state.run(state.locked, lambda: state.index.duplicates(threshold))
        return json_response({"groups": [{"group": n, **g.to_dict()} for n, g in enumerate(groups, 1)]})

    @router.get("/errors")
    async def errors() -> Response:
        """Files that could not be indexed, with the reason (as ``searchindex errors --json``)."""
        return json_response({"errors": [f.to_dict() for f in await state.run(state.index.failures)]})

    return router


def _concept_router(state: WebApp) -> APIRouter:
    router = APIRouter(prefix="/api/concepts", tags=["concepts"])

    @router.get("")
    async def concepts() -> Response:
        """Saved concepts: a name, a query text, liked and unliked example image ids."""
        return json_response({"concepts": [c.to_dict() for c in await state.run(state.index.concepts)]})

    @router.post("")
    async def save_concept(
        name: Annotated[str, Body()], query: Annotated[str | None, Body()] = None,
        like: Annotated[list[int], Body()] = [], unlike: Annotated[list[int], Body()] = [],  # noqa: B006
    ) -> Response:
        """Save (or replace) a concept; then ``search?concept=NAME`` or ``searchindex search --concept NAME``."""
        saved = await state.run(lambda: state.index.save_concept(name, query, like, unlike))
        return json_response(saved.to_dict(), 201)

    @router.delete("/{name}")
    async def remove_concept(name: str) -> Response:
        """Forget a concept."""
        if not await state.run(state.index.remove_concept, name):
            raise NotFoundError(f"no concept named {name!r}")
        return Response(status_code=204)

    return router
