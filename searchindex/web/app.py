"""The FastAPI application: JSON API under ``/api`` (:mod:`searchindex.web.api`), the page at ``/``,
its assets under ``/static``.

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
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..defaults import DEFAULT_HOST
from ..errors import IndexLockedError, IndexNotFoundError, NotFoundError, ParameterError, QueryError, SearchIndexError
from ..frontend.params import search_params
from ..index.facade import Index
from ..store.folder import THUMBNAIL_FOLDER
from .api import api_routers, error_response
from .files import ThumbnailCache
from .security import RequestGuard

__all__ = ["WebApp", "build_app"]

log = logging.getLogger(__name__)
T = TypeVar("T")

# Every file of static/ with one of these endings is served (so a feature adds its module by adding a file).
_MEDIA = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
_PAGE_HEADERS = {
    # Everything the page uses comes from this server; no inline scripts, no framing.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                               "script-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


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
        watch: keep the index live (``serve --watch``, see :mod:`searchindex.web.watching`).
    """

    def __init__(self, index_path: str | os.PathLike[str], *, host: str = DEFAULT_HOST, token: str | None = None,
                 allowed_hosts: list[str] | None = None, cors_origins: list[str] | None = None,
                 device: str = "auto", thumbnail_cache_mb: int = 512, thumbnail_workers: int | None = None,
                 warm: bool = True, watch: bool = False) -> None:
        self.index = Index.open(index_path, device=device)
        from .watching import LiveIndex

        self.live = LiveIndex(index_path, device=device) if watch else None
        if self.live is not None:
            try:
                self.live.check(self.index)
            except BaseException:
                self.index.close()
                raise
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
        folder = resources.files(__package__) / "static"
        self._assets = {item.name: item.read_bytes() for item in folder.iterdir()
                        if item.is_file() and (os.path.splitext(item.name)[1] in _MEDIA or item.name == "index.html")}

    async def run(self, fn: Callable[..., T], *args: Any, pool: ThreadPoolExecutor | None = None) -> T:
        return await asyncio.get_running_loop().run_in_executor(pool or self._pool, fn, *args)

    @property
    def thumbnail_pool(self) -> ThreadPoolExecutor:
        """The threads that make thumbnails (apart from searches and catalog reads)."""
        return self._thumb_pool

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


def build_app(index_path: str | os.PathLike[str], **options: Any) -> RequestGuard:
    """The ASGI app for an index: its FastAPI app behind the request guard (see :class:`WebApp` for ``options``)."""
    state = WebApp(index_path, **options)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if state.warm:
            asyncio.get_running_loop().run_in_executor(state._pool, state.warm_up)
        if state.live is not None:
            state.live.start()
        try:
            yield
        finally:
            if state.live is not None:
                state.live.stop()
            state.close()

    app = FastAPI(title="searchindex", version=_version(), lifespan=lifespan,
                  summary="Search a local photo index by text, example images and saved concepts.",
                  # No /docs: Swagger UI loads its scripts from a CDN, which this page's CSP and a
                  # person's privacy both rule out; /openapi.json describes the API to any tool.
                  docs_url=None, redoc_url=None)
    app.state.web = state

    @app.exception_handler(SearchIndexError)
    async def libraryerror_response(request: Request, exc: SearchIndexError) -> Response:
        if isinstance(exc, NotFoundError):
            return error_response(404, str(exc))
        if isinstance(exc, ParameterError):
            return error_response(400, str(exc), exc.param)
        if isinstance(exc, QueryError):
            return error_response(400, str(exc))
        if isinstance(exc, IndexLockedError):
            return error_response(409, str(exc))
        if isinstance(exc, IndexNotFoundError):  # the folder was deleted while serving: maybe put back soon
            return error_response(503, str(exc))
        return error_response(500, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def httperror_response(request: Request, exc: StarletteHTTPException) -> Response:
        return error_response(exc.status_code, "not found" if exc.status_code == 404 else str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> Response:
        problem = exc.errors()[0] if exc.errors() else {}
        where = [str(p) for p in problem.get("loc", ()) if p not in ("query", "body", "path")]
        return error_response(400, f"{'.'.join(where) or 'request'}: {problem.get('msg', 'bad value')}",
                      where[0] if where else None)

    from .watching import watch_router

    for router in [*api_routers(state), watch_router(state.live)]:
        app.include_router(router)
    _page_routes(app, state)

    wrapped: Any = app
    if state.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        wrapped = CORSMiddleware(wrapped, allow_origins=state.cors_origins, allow_methods=["GET"],
                                 allow_headers=["Authorization"])
    # The guard runs first, also in front of the OpenAPI page; `app.state.web` stays reachable on the outer app.
    return RequestGuard(wrapped, bind_host=state.host, token=state.token, allowed_hosts=state.allowed_hosts,
                        cors_origins=state.cors_origins, inner=app)


def _version() -> str:
    from .. import __version__

    return __version__


def _page_routes(app: FastAPI, state: WebApp) -> None:
    etags = {name: f'"{hashlib.sha256(data).hexdigest()[:16]}"' for name, data in state._assets.items()}

    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        return Response(state._assets["index.html"], media_type="text/html; charset=utf-8",
                        headers={**_PAGE_HEADERS, "Cache-Control": "no-cache"})

    @app.get("/static/{name}", include_in_schema=False)
    async def static(request: Request, name: str) -> Response:
        if name not in state._assets or name == "index.html":
            return error_response(404, "not found")
        headers = {"ETag": etags[name], "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
        if request.headers.get("if-none-match") == etags[name]:
            return Response(status_code=304, headers=headers)
        return Response(state._assets[name], media_type=_MEDIA[os.path.splitext(name)[1]], headers=headers)
