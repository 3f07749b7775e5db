"""Browsing without a query: the library newest first, paged by a stable cursor (``/api/browse``).

The order is the date taken (local wall-clock text, as the catalog stores it), else the file's
time, newest first, ties broken by image id.  A page ends with a cursor naming the last image's
(date, id); the next page starts strictly after it, so images added meanwhile never shift or
repeat what was already shown (an offset would).  Filters make a filtered timeline: the
catalog resolves them to a set of ids, as for a search.

The whole timeline ((date, id) per image, sorted) is read once per catalog generation and kept
in memory: about 60 bytes an image, and a page is then a bisection plus a mask over it.
"""

from __future__ import annotations

import base64
import bisect
import threading
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
from fastapi import APIRouter, Query
from fastapi.responses import Response

from ..errors import ParameterError
from ..store.catalog.filters import Filters, parse_date, parse_near
from .api import json_response

if TYPE_CHECKING:
    from ..index.facade import Index
    from .app import WebApp

__all__ = ["Timeline", "browse_router"]

_LAST = 2**63 - 1  # above every image id: a jump cursor that keeps every image of its date
_MAX_PAGE = 500


def _encode_cursor(key: str, image_id: int) -> str:
    return base64.urlsafe_b64encode(f"{key}|{image_id}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[str, int]:
    try:
        key, _, image_id = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().rpartition("|")
        return key, int(image_id)
    except (ValueError, UnicodeDecodeError):
        raise ParameterError("this page's position (cursor) is not one the server gave out", "cursor") from None


class Timeline:
    """Every image's (date, id), oldest first, re-read when the catalog's generation moves on."""

    def __init__(self, index: Index) -> None:
        self.index = index
        self._lock = threading.Lock()
        self._generation = -1
        self._entries: list[tuple[str, int]] = []
        self._ids = np.zeros(0, dtype=np.int64)

    def _current(self) -> tuple[list[tuple[str, int]], np.ndarray]:
        read = self.index.catalog.read
        with self._lock:
            generation = read.generation()
            if generation != self._generation:
                self._entries = read.timeline()
                self._ids = np.fromiter((i for _, i in self._entries), dtype=np.int64, count=len(self._entries))
                self._generation = generation
            return self._entries, self._ids

    def page(self, allowed: np.ndarray | None, limit: int, cursor: tuple[str, int] | None,
             ) -> tuple[list[tuple[str, int]], tuple[str, int] | None]:
        """Up to ``limit`` (date, id) newest first, strictly older than ``cursor``; and the next cursor
        (``None`` at the end).  ``allowed``: the ids that pass the filters (``None``: every image)."""
        entries, ids = self._current()
        end = len(entries) if cursor is None else bisect.bisect_left(entries, cursor)
        if allowed is None:
            positions = np.arange(max(0, end - limit - 1), end)
        else:
            positions = np.flatnonzero(np.isin(ids[:end], allowed, assume_unique=True))[-(limit + 1):]
        positions = positions[::-1]
        chosen = [entries[p] for p in positions[:limit]]
        more = len(positions) > limit
        return chosen, (chosen[-1] if more and chosen else None)

    def months(self, allowed: np.ndarray | None) -> list[tuple[str, int]]:
        """(YYYY-MM, images) newest first, for the jump-to control (images without a date left out)."""
        entries, ids = self._current()
        mask = None if allowed is None else np.isin(ids, allowed, assume_unique=True)
        counts: dict[str, int] = {}
        for n, (key, _) in enumerate(entries):
            if key and (mask is None or mask[n]):
                counts[key[:7]] = counts.get(key[:7], 0) + 1
        return sorted(counts.items(), reverse=True)


def _allowed(index: Index, filters: Filters, tag: str | None) -> np.ndarray | None:
    """The ids that pass the filters and the tag, or ``None`` when nothing filters."""
    read = index.catalog.read
    allowed = read.filtered_ids(filters) if filters.active else None
    if tag:
        tagged = read.ids_tagged(tag)
        allowed = tagged if allowed is None else np.intersect1d(allowed, tagged, assume_unique=True)
    return allowed


def _filters(path: list[str], exclude: list[str], camera: list[str], after: str | None, before: str | None,
             min_width: str | None, min_height: str | None, near: str | None, radius: str | None) -> Filters:
    def number(value: str | None, name: str) -> int | None:
        if value in (None, ""):
            return None
        try:
            n = int(value)
        except ValueError:
            raise ParameterError(f"{name} must be a whole number, not {value!r}", name) from None
        if n < 1:
            raise ParameterError(f"{name} must be at least 1, not {n}", name)
        return n

    radius_km = None
    if radius not in (None, ""):
        try:
            radius_km = float(radius)
        except ValueError:
            raise ParameterError(f"radius must be a number of km, not {radius!r}", "radius") from None
    return Filters(paths=tuple(path), exclude=tuple(exclude), cameras=tuple(c for c in camera if c.strip()),
                   after=after or None, before=before or None, min_width=number(min_width, "min_width"),
                   min_height=number(min_height, "min_height"), near=parse_near(near) if near else None,
                   radius_km=radius_km)


def _jump(start: str) -> tuple[str, int]:
    """The cursor that starts a page at the newest image of ``start`` (YYYY, YYYY-MM or a date)."""
    try:
        first = parse_date(start)
    except Exception:
        raise ParameterError(f"start must be a year, a month or a day (YYYY[-MM[-DD]]), not {start!r}",
                             "start") from None
    del first  # checked only: the period's dates all start with the text given
    prefix = start.strip()
    # Every date text of that period starts with the prefix and sorts below prefix + "\x7f".
    return prefix + "\x7f", _LAST


def browse_router(state: WebApp) -> APIRouter:
    """``GET /api/browse`` and ``GET /api/browse/months`` over ``state``'s index."""
    router = APIRouter(prefix="/api", tags=["browse"])
    timeline = Timeline(state.index)

    @router.get("/browse")
    async def browse(
        k: Annotated[int, Query(ge=1, le=_MAX_PAGE, description="Images per page.")] = 60,
        cursor: Annotated[str | None, Query(description="The next_cursor of the page before.")] = None,
        start: Annotated[str | None, Query(description="Start at this year, month or day (YYYY[-MM[-DD]]).")] = None,
        path: list[str] = Query([]), exclude: list[str] = Query([]), camera: list[str] = Query([]),  # noqa: B008
        after: str | None = None, before: str | None = None, min_width: str | None = None,
        min_height: str | None = None, near: str | None = None, radius: str | None = None, tag: str | None = None,
    ) -> Response:
        """The library newest first (date taken, else file time), with the filters of a search."""
        filters = _filters(path, exclude, camera, after, before, min_width, min_height, near, radius)
        where = _decode_cursor(cursor) if cursor else _jump(start) if start else None

        def page() -> dict[str, Any]:
            chosen, nxt = timeline.page(_allowed(state.index, filters, tag), k, where)
            records = state.index.catalog.read.records(i for _, i in chosen)
            images = []
            for key, image_id in chosen:
                rec = records.get(image_id)
                if rec is not None:  # removed since the timeline was read
                    images.append({"image_id": image_id, "path": rec.path, "date": key, "taken_at": rec.taken_at,
                                   "width": rec.width, "height": rec.height})
            return {"images": images, "next_cursor": _encode_cursor(*nxt) if nxt else None}

        return json_response(await state.run(page))

    @router.get("/browse/months")
    async def months(
        path: list[str] = Query([]), exclude: list[str] = Query([]), camera: list[str] = Query([]),  # noqa: B008
        after: str | None = None, before: str | None = None, min_width: str | None = None,
        min_height: str | None = None, near: str | None = None, radius: str | None = None, tag: str | None = None,
    ) -> Response:
        """How many images each month holds, newest first (for "jump to")."""
        filters = _filters(path, exclude, camera, after, before, min_width, min_height, near, radius)
        counts = await state.run(lambda: timeline.months(_allowed(state.index, filters, tag)))
        return json_response({"months": [{"month": m, "images": n} for m, n in counts]})

    return router
