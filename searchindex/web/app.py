"""The FastAPI application: JSON API under ``/api``, the page at ``/``, its assets under ``/static``.

Every route is a few lines over :class:`searchindex.Index`.  Blocking work (a
search, a catalog read, making a thumbnail) runs in worker threads, never on
the event loop; searches take turns on one lock (the vector index is caught up
in place when another process has indexed more images), thumbnails are made
by a pool of their own so a grid's 60 requests never wait behind a search.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, TypeVar

from fastapi import Body, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..defaults import DEFAULT_DUPLICATE_THRESHOLD, DEFAULT_HOST
from ..errors import IndexLockedError, NotFoundError, ParameterError, QueryError, SearchIndexError
from ..index import Index
from ..results import TagCount
from ..search.params import example_ids, search_params
from ..store.folder import THUMBNAIL_FOLDER
from .files import StaleFileError, ThumbnailCache, mime_type, open_indexed, thumbnail_size
from .security import RequestGuard

__all__ = ["WebApp", "build_app"]

log = logging.getLogger(__name__)
T = TypeVar("T")

_MAX_ID = 2**63 - 1
_STATIC = {"app.js": "text/javascript", "app.css": "text/css", "favicon.svg": "image/svg+xml"}
_PAGE_HEADERS = {
    # Everything the page uses comes from this server; no inline scripts, no framing.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                               "script-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_PLACEHOLDER = (
    b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64" width="256" height="256">'
    b'<rect width="64" height="64" fill="#ddd"/><path d="M20 20l24 24M44 20L20 44" stroke="#999" '
    b'stroke-width="4"/></svg>'
)


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """JSON with the standard library's encoder: the same text as the CLI's --json for the same data."""
    return Response(json.dumps(data), status_code=status, media_type="application/json", headers=headers)


def _error(status: int, message: str, parameter: str | None = None) -> Response:
    body: dict[str, Any] = {"error": message}
    if parameter is not None:
        body["parameter"] = parameter
    return _json(body, status)


class WebApp:
    """The state behind the routes: one open index, its thumbnail cache, and the worker pools.

    Args:
        index_path: the index folder.
        host: the address the server listens on (decides the Host check; see
            :mod:`searchindex.web.security`).
        token: a secret every request must carry; ``None`` for none.
        allowed_hosts: Host header names accepted (default: loopback names when
            ``host`` is loopback, else any).
        cors_origins: origins allowed to call the API from other pages (default none:
            no CORS headers at all).
        device: where the model runs.
        thumbnail_cache_mb: bound of the thumbnail folder ``<index>/thumbnails``.
        thumbnail_workers: threads making thumbnails.
        warm: load the text model at startup so the first search is fast.
    """

    def __init__(self, index_path: str | os.PathLike[str], *, host: str = DEFAULT_HOST, token: str | None = None,
                 allowed_hosts: list[str] | None = None, cors_origins: list[str] | None = None,
                 device: str = "auto", thumbnail_cache_mb: int = 512, thumbnail_workers: int | None = None,
                 warm: bool = True) -> None:
        self.index = Index.open(index_path, device=device)
        self.host = host
        self.token = token
        self.allowed_hosts = allowed_hosts
        self.cors_origins = list(cors_origins or [])
        self.thumbnails = ThumbnailCache(self.index.path / THUMBNAIL_FOLDER, max_bytes=thumbnail_cache_mb * 2**20)
        self.warm = warm
        self._search_lock = threading.Lock()
        self._thumb_pool = ThreadPoolExecutor(thumbnail_workers or min(4, os.cpu_count() or 1),
                                              thread_name_prefix="thumbnail")
        self._pool = ThreadPoolExecutor(4, thread_name_prefix="searchindex")
        self._assets = {name: (resources.files(__package__) / "static" / name).read_bytes()
                        for name in (*_STATIC, "index.html")}

    async def run(self, fn: Callable[..., T], *args: Any, pool: ThreadPoolExecutor | None = None) -> T:
        return await asyncio.get_running_loop().run_in_executor(pool or self._pool, fn, *args)

    def search(self, **params: Any) -> tuple[list[dict[str, Any]], Any]:
        with self._search_lock:
            search = search_params(self.index, **params)
            results = search.run(self.index)
        return [r.to_dict() for r in results], search

    def locked(self, fn: Callable[[], T]) -> T:
        """``fn()`` while no search runs (it uses the vector index or the model, which searches update)."""
        with self._search_lock:
            return fn()

    def warm_up(self) -> None:
        try:
            with self._search_lock:
                self.index.encode_texts(["a photo"])
        except SearchIndexError as exc:  # the page still serves files, tags, duplicates
            log.warning("could not load the text model: %s", exc)

    def close(self) -> None:
        self._thumb_pool.shutdown(wait=False, cancel_futures=True)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.index.close()


def build_app(index_path: str | os.PathLike[str], **options: Any) -> FastAPI:
    """The FastAPI app for an index (see :class:`WebApp` for ``options``)."""
    state = WebApp(index_path, **options)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if state.warm:
            asyncio.get_running_loop().run_in_executor(state._pool, state.warm_up)
        try:
            yield
        finally:
            state.close()

    app = FastAPI(title="searchindex", version=_version(), lifespan=lifespan,
                  summary="Search a local photo index by text, example images and saved concepts.",
                  docs_url="/docs", redoc_url=None)
    app.state.web = state

    @app.exception_handler(SearchIndexError)
    async def library_error(request: Request, exc: SearchIndexError) -> Response:
        if isinstance(exc, NotFoundError):
            return _error(404, str(exc))
        if isinstance(exc, ParameterError):
            return _error(400, str(exc), exc.param)
        if isinstance(exc, QueryError):
            return _error(400, str(exc))
        if isinstance(exc, IndexLockedError):
            return _error(409, str(exc))
        return _error(500, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return _error(exc.status_code, "not found" if exc.status_code == 404 else str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> Response:
        problem = exc.errors()[0] if exc.errors() else {}
        where = [str(p) for p in problem.get("loc", ()) if p not in ("query", "body", "path")]
        return _error(400, f"{'.'.join(where) or 'request'}: {problem.get('msg', 'bad value')}",
                      where[0] if where else None)

    _api_routes(app, state)
    _page_routes(app, state)

    wrapped: Any = app
    if state.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        wrapped = CORSMiddleware(wrapped, allow_origins=state.cors_origins, allow_methods=["GET"],
                                 allow_headers=["Authorization"])
    guard = RequestGuard(wrapped, bind_host=state.host, token=state.token, allowed_hosts=state.allowed_hosts)
    # The guard runs first, also in front of the OpenAPI page; `app.state.web` stays reachable on the outer app.
    guard.state = app.state  # type: ignore[attr-defined]
    guard.fastapi = app  # type: ignore[attr-defined]
    return guard  # type: ignore[return-value]


def _version() -> str:
    from .. import __version__

    return __version__


def _image_or_404(state: WebApp, image_id: int) -> Any:
    if image_id > _MAX_ID:
        raise NotFoundError(f"no image with id {image_id} in this index")
    return state.index.image(image_id)


Strs = Annotated[list[str], Query()]


def _api_routes(app: FastAPI, state: WebApp) -> None:
    @app.get("/api/search", tags=["search"])
    async def search(
        q: Annotated[str | None, Query(description="Query text (the CLI's QUERY).")] = None,
        k: Annotated[str | None, Query(description="Results per page (default 10; all that pass a cutoff).")] = None,
        offset: Annotated[str | None, Query(description="Results to skip: paging.")] = None,
        image: Annotated[list[str], Query(description="image_id of an example image to search by.")] = [],  # noqa: B006
        plus: Annotated[list[str], Query(description="[WEIGHT:]TEXT added to the query.")] = [],  # noqa: B006
        minus: Annotated[list[str], Query(description="[WEIGHT:]TEXT subtracted.")] = [],  # noqa: B006
        path: Annotated[list[str], Query(description="Only paths matching this glob or folder.")] = [],  # noqa: B006
        exclude: Annotated[list[str], Query(description="Leave out paths matching this glob.")] = [],  # noqa: B006
        min_width: str | None = None,
        min_height: str | None = None,
        after: Annotated[str | None, Query(description="Taken at or after (YYYY[-MM[-DD]]).")] = None,
        before: Annotated[str | None, Query(description="Taken before (exclusive).")] = None,
        camera: Annotated[list[str], Query(description="Camera make/model contains.")] = [],  # noqa: B006
        near: Annotated[str | None, Query(description="LAT,LON")] = None,
        radius: Annotated[str | None, Query(description="km around near (default 10).")] = None,
        tag: str | None = None,
        like: Annotated[list[str], Query(description="image_id of an example of what is meant.")] = [],  # noqa: B006
        unlike: Annotated[list[str], Query(description="image_id of an example of what is not.")] = [],  # noqa: B006
        concept: Annotated[str | None, Query(description="Name of a saved concept.")] = None,
        mode: Annotated[str, Query(description="auto, vector, text or hybrid.")] = "auto",
        threshold: Annotated[str | None, Query(description="'auto' or a number.")] = None,
        min_score: str | None = None,
        sort: Annotated[str, Query(description="score or date.")] = "score",
        pool: str | None = None,
    ) -> Response:
        """Search: results with exactly the fields of ``searchindex search --json``, in the same order."""
        params: dict[str, Any] = dict(
            text=q, k=k, offset=offset, plus=plus, minus=minus, paths=path, exclude=exclude, min_width=min_width,
            min_height=min_height, after=after, before=before, cameras=camera, near=near, radius=radius, tag=tag,
            like=example_ids(like, "--like", "like"), unlike=example_ids(unlike, "--unlike", "unlike"),
            images=example_ids(image, "--image", "image"), concept=concept, mode=mode, threshold=threshold,
            min_score=min_score, sort=sort,
        )
        if pool not in (None, ""):
            params["pool"] = pool
        results, search = await state.run(lambda: state.search(**params))
        more = search.k is not None and len(results) == search.k
        body: dict[str, Any] = {"results": results,
                                "next_offset": search.offset + len(results) if more else None}
        if not results:
            body["message"] = search.empty_message()
        return _json(body)

    @app.get("/api/images/{image_id:int}", tags=["images"])
    async def image(image_id: int) -> Response:
        """What the index knows about one image: file facts, date, camera, place, caption, keywords, tags."""
        return _json((await state.run(_image_or_404, state, image_id)).to_dict())

    @app.get("/api/images/{image_id:int}/thumbnail", tags=["images"])
    async def thumbnail(request: Request, image_id: int,
                        size: Annotated[int | None, Query(ge=16, le=4096)] = None) -> Response:
        """A thumbnail (WebP, else JPEG; EXIF orientation applied); a placeholder when the file is unusable."""
        details = await state.run(_image_or_404, state, image_id)
        edge = thumbnail_size(size)
        try:
            thumb = await state.run(state.thumbnails.get, details, edge, pool=state._thumb_pool)
        except StaleFileError as exc:
            log.info("no thumbnail for %s: %s", details.path, exc)
            return Response(_PLACEHOLDER, media_type="image/svg+xml",
                            headers={"Cache-Control": "no-store", "X-Thumbnail": "placeholder"})
        headers = {"ETag": thumb.etag, "Cache-Control": "private, max-age=86400"}
        if request.headers.get("if-none-match") == thumb.etag:
            return Response(status_code=304, headers=headers)
        return Response(thumb.data, media_type=thumb.media_type, headers=headers)

    @app.get("/api/images/{image_id:int}/file", tags=["images"])
    async def file(image_id: int) -> Response:
        """The original file, as indexed (404 when it is gone or has changed since)."""
        details = await state.run(_image_or_404, state, image_id)
        try:
            handle = await state.run(open_indexed, details)
        except StaleFileError as exc:
            return _error(404, f"the file of image {image_id} cannot be served: {exc}")

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

    @app.get("/api/info", tags=["index"])
    async def info() -> Response:
        """The index: model, image count, vector index type and sizes (as ``searchindex info --json``)."""
        return _json((await state.run(state.index.info)).to_dict())

    @app.get("/api/tags", tags=["index"])
    async def tags() -> Response:
        """Zero-shot labels with how many images carry each (as ``searchindex tags --json``)."""
        counts = await state.run(state.index.tags)
        return _json({"tags": [TagCount(label, n).to_dict() for label, n in counts]})

    @app.post("/api/tags", tags=["index"])
    async def tag(labels: Annotated[list[str], Body()],
                  templates: Annotated[str, Body(pattern="^(default|single)$")] = "default") -> Response:
        """Define zero-shot labels and tag every image (as ``searchindex tag --labels``); one report per label."""
        from ..enrich.tagging import parse_labels

        names = parse_labels(",".join(labels))
        reports = await state.run(state.locked, lambda: state.index.tag(names, templates=templates))
        return _json({"labels": [r.to_dict() for r in reports]})

    @app.delete("/api/tags/{label}", tags=["index"])
    async def untag(label: str) -> Response:
        """Forget a label and its tags (as ``searchindex tag --remove``)."""
        if not await state.run(state.locked, lambda: state.index.untag([label])):
            raise NotFoundError(f"no label {label!r} in this index")
        return Response(status_code=204)

    @app.get("/api/duplicates", tags=["index"])
    async def duplicates(threshold: Annotated[float, Query(gt=0, le=1)] = DEFAULT_DUPLICATE_THRESHOLD) -> Response:
        """Groups of near-identical images, best copy first (as ``searchindex duplicates --json``)."""
        groups = await state.run(state.locked, lambda: state.index.duplicates(threshold))
        return _json({"groups": [{"group": n, **g.to_dict()} for n, g in enumerate(groups, 1)]})

    @app.get("/api/errors", tags=["index"])
    async def errors() -> Response:
        """Files that could not be indexed, with the reason (as ``searchindex errors --json``)."""
        return _json({"errors": [f.to_dict() for f in await state.run(state.index.failures)]})

    @app.get("/api/concepts", tags=["concepts"])
    async def concepts() -> Response:
        """Saved concepts: a name, a query text, liked and unliked example image ids."""
        return _json({"concepts": [c.to_dict() for c in await state.run(state.index.concepts)]})

    @app.post("/api/concepts", tags=["concepts"])
    async def save_concept(
        name: Annotated[str, Body()], query: Annotated[str | None, Body()] = None,
        like: Annotated[list[int], Body()] = [], unlike: Annotated[list[int], Body()] = [],  # noqa: B006
    ) -> Response:
        """Save (or replace) a concept; then ``search?concept=NAME`` or ``searchindex search --concept NAME``."""
        saved = await state.run(lambda: state.index.save_concept(name, query, like, unlike))
        return _json(saved.to_dict(), 201)

    @app.delete("/api/concepts/{name}", tags=["concepts"])
    async def remove_concept(name: str) -> Response:
        """Forget a concept."""
        if not await state.run(state.index.remove_concept, name):
            raise NotFoundError(f"no concept named {name!r}")
        return Response(status_code=204)


def _page_routes(app: FastAPI, state: WebApp) -> None:
    etags = {name: f'"{hashlib.sha256(data).hexdigest()[:16]}"' for name, data in state._assets.items()}

    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        return Response(state._assets["index.html"], media_type="text/html; charset=utf-8",
                        headers={**_PAGE_HEADERS, "Cache-Control": "no-cache"})

    @app.get("/static/{name}", include_in_schema=False)
    async def static(request: Request, name: str) -> Response:
        if name not in _STATIC:
            return _error(404, "not found")
        headers = {"ETag": etags[name], "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
        if request.headers.get("if-none-match") == etags[name]:
            return Response(status_code=304, headers=headers)
        return Response(state._assets[name], media_type=_STATIC[name], headers=headers)


def asset_folder() -> Path:
    """Where the page's files are (for docs and tests)."""
    return Path(str(resources.files(__package__) / "static"))
