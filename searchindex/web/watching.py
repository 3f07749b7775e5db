"""``serve --watch``: the index kept live while the page is open, and ``GET /api/watch`` telling the page.

The watch writes through an :class:`~searchindex.index.Index` of its own (the page's reads go
through the server's, which catches up with each committed batch on its next search); the page
asks ``/api/watch`` every few seconds and offers the new photos (``static/watch.js``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from fastapi.responses import Response  # at run time: FastAPI reads the route's annotations

from .api import json_response

if TYPE_CHECKING:
    from ..index.facade import Index
    from ..index.watching import WatchHandle
    from ..results import IndexSummary

__all__ = ["LiveIndex", "watch_router"]

log = logging.getLogger(__name__)


class LiveIndex:
    """A watch of the index's folders for the lifetime of the server, and what it has done."""

    def __init__(self, index_path: str | os.PathLike[str], *, device: str = "auto") -> None:
        self._path = index_path
        self._device = device
        self._lock = threading.Lock()
        self._index: Index | None = None
        self._handle: WatchHandle | None = None
        self.added = 0
        self.moved = 0
        self.removed = 0
        self.changed_at = 0.0
        self.error = ""

    def check(self, index: Index) -> None:
        """Fail before serving when the watch could not start.

        Raises:
            MissingExtraError: watchdog is not installed (``searchindex[watch]``).
            ParameterError: no folder has been indexed yet.
        """
        from ..errors import ParameterError
        from ..ingest.mounts import require_watchdog

        require_watchdog()
        if not index.indexed_folders():
            raise ParameterError("--watch watches the folders indexed so far, and none has been: "
                                 "index one first (searchindex index FOLDER)", "--watch")

    def start(self) -> None:
        """Open the watch's own index and start watching its indexed folders.

        Raises:
            MissingExtraError, ParameterError: as :meth:`searchindex.Index.watch`.
        """
        from ..index.facade import Index

        self._index = Index.open(self._path, device=self._device)
        try:
            self._handle = self._index.watch(on_change=self._changed, on_error=self._failed)
        except BaseException:
            self._index.close()
            self._index = None
            raise

    def stop(self) -> None:
        """Stop watching (the batch in flight is committed) and close the watch's index."""
        if self._handle is not None:
            self._handle.stop()
        if self._index is not None:
            self._index.close()
        self._handle = self._index = None

    def _changed(self, summary: IndexSummary) -> None:
        with self._lock:
            self.added += summary.new
            self.moved += summary.moved
            self.removed += summary.deleted
            self.changed_at = time.time()

    def _failed(self, exc: BaseException) -> None:
        with self._lock:
            self.error = str(exc)

    def status(self) -> dict[str, Any]:
        """What ``GET /api/watch`` answers."""
        with self._lock:
            return {"watching": self._handle is not None and self._handle.running, "added": self.added,
                    "moved": self.moved, "removed": self.removed, "changed_at": self.changed_at,
                    "folders": self._handle.modes() if self._handle is not None else {}, "error": self.error}


def watch_router(live: LiveIndex | None) -> APIRouter:
    """``GET /api/watch``: whether the index is watched, and the counts of what changed since the server started
    (the page compares ``added`` with the count it loaded with)."""
    router = APIRouter(prefix="/api", tags=["index"])

    @router.get("/watch")
    async def watch_status() -> Response:
        if live is None:
            return json_response({"watching": False, "added": 0, "moved": 0, "removed": 0, "changed_at": 0,
                                  "folders": {}, "error": ""})
        return json_response(live.status())

    return router
