"""Search filters: the conditions a result must meet, and the SQL that finds the images meeting them.

:class:`Filters` is plain data, validated on construction (bad input is an
input error, never a search-time surprise); :func:`filtered_ids` resolves it
into the sorted ids of every matching image with one SQL query, which the
vector index then ranks exactly.
"""

from __future__ import annotations

import itertools
import math
import os
import re
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any

import numpy as np
from sqlalchemy import and_, false, not_, or_, select
from sqlalchemy.engine import Engine

from ..errors import QueryError
from .schema import ImageRow

__all__ = [
    "DEFAULT_RADIUS_KM",
    "EARTH_RADIUS_KM",
    "Filters",
    "filtered_ids",
    "glob_to_sqlite",
    "haversine_km",
    "parse_date",
    "parse_near",
]

_GLOB_CHARS = re.compile(r"[*?\[]")


def glob_to_sqlite(pattern: str, cwd: str | None = None) -> tuple[str | None, str]:
    """Translate a ``--path``/``--exclude`` pattern into (exact path or None, SQLite GLOB).

    Patterns match absolute paths.  ``~`` is expanded; a relative pattern is taken
    from ``cwd`` (default: the current directory), except that one starting with
    ``*`` matches anywhere.  ``*`` matches any run of characters, ``/`` included
    (SQLite GLOB semantics, like ``**`` in shells), ``?`` one character, ``[abc]``
    and ``[!abc]`` a class.  Matching is case-sensitive.  A pattern without
    wildcards names a file or a folder: the file itself, or everything below it.

    Raises:
        QueryError: an empty pattern or an unclosed ``[``.
    """
    if not pattern or not pattern.strip():
        raise QueryError("empty path pattern")
    p = os.path.expanduser(pattern)
    if not _GLOB_CHARS.search(p):
        exact = os.path.normpath(os.path.join(cwd or os.getcwd(), p))
        below = exact.rstrip("/") + "/*" if exact != "/" else "/*"
        return exact, below
    if not p.startswith(("*", "/")):
        p = os.path.join(cwd or os.getcwd(), p)
    out: list[str] = []
    i = 0
    while i < len(p):
        c = p[i]
        if c == "[":
            j = i + 1
            if p[j : j + 1] in ("!", "^"):
                j += 1
            if p[j : j + 1] == "]":  # a leading ']' is a member of the class
                j += 1
            end = p.find("]", j)
            if end < 0:
                raise QueryError(f"bad glob {pattern!r}: the '[' at position {i} is never closed")
            body = p[i + 1 : end]
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append("[" + body + "]")
            i = end + 1
        else:
            out.append(c)
            i += 1
    return None, "".join(out)


_DATE_RE = re.compile(
    r"^\s*(\d{4})(?:-(\d{1,2})(?:-(\d{1,2})(?:[T ](\d{1,2}):(\d{2})(?::(\d{2}))?)?)?)?\s*$"
)


def parse_date(value: str | date | datetime) -> str:
    """A ``--after``/``--before`` bound as the catalog's local wall-clock text (``YYYY-MM-DDTHH:MM:SS``).

    Accepts ``YYYY``, ``YYYY-MM``, ``YYYY-MM-DD`` and ``YYYY-MM-DD[T ]HH:MM[:SS]``
    (a partial date means its start: ``2023-06`` is 2023-06-01T00:00:00), or a
    ``date``/``datetime`` (a timezone-aware one is taken in its own local time).

    Raises:
        QueryError: anything else, or an impossible date.
    """
    if isinstance(value, datetime):
        return value.replace(tzinfo=None, microsecond=0).isoformat()
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day).isoformat()
    m = _DATE_RE.match(value)
    if not m:
        raise QueryError(
            f"bad date {value!r}: write YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS] "
            "(local time of the photo, no timezone)"
        )
    y, mo, d, h, mi, sec = (int(g) if g else None for g in m.groups())
    try:
        return datetime(y or 1, mo or 1, d or 1, h or 0, mi or 0, sec or 0).isoformat()
    except ValueError as exc:
        raise QueryError(f"bad date {value!r}: {exc}") from None


def parse_near(value: str) -> tuple[float, float]:
    """``LAT,LON`` in decimal degrees (``48.8584,2.2945``; south and west negative).

    Raises:
        QueryError: not two numbers, or out of range.
    """
    parts = value.replace(" ", "").split(",")
    try:
        if len(parts) != 2:
            raise ValueError
        lat, lon = float(parts[0]), float(parts[1])
    except ValueError:
        raise QueryError(f"bad position {value!r}: write LAT,LON in decimal degrees, e.g. 48.8584,2.2945") from None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise QueryError(f"bad position {value!r}: latitude is within -90..90 and longitude within -180..180")
    return lat, lon


#: Mean Earth radius (km), for great-circle distances.
EARTH_RADIUS_KM = 6371.0088
#: --near without --radius.
DEFAULT_RADIUS_KM = 10.0


def haversine_km(lat: np.ndarray, lon: np.ndarray, lat0: float, lon0: float) -> np.ndarray:
    """Great-circle distances (km) from (lat0, lon0) to each (lat, lon)."""
    p1, p2 = np.radians(lat), math.radians(lat0)
    dlat, dlon = p1 - p2, np.radians(lon) - math.radians(lon0)
    a = np.sin(dlat / 2) ** 2 + np.cos(p1) * math.cos(p2) * np.sin(dlon / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0, 1)))


@dataclass(frozen=True)
class Filters:
    """Conditions a result must meet; every set field must hold (AND).

    Resolved by the catalog into the set of matching image ids, which the vector
    index then ranks exactly (see :meth:`searchindex.Index.search`).  Images
    whose metadata is unknown never match a date, camera or position filter.

    Attributes:
        paths: the path must match at least one of these patterns (see :func:`glob_to_sqlite`).
        exclude: the path must match none of these patterns.
        min_width, min_height: minimum pixel size of the (EXIF-oriented) image.
        after: taken at or after this time (see :func:`parse_date`; inclusive).
        before: taken before this time (exclusive): ``after="2023-06", before="2023-07"`` is June 2023.
            Dates compare as the photo's local wall-clock time.
        cameras: camera make + model must contain one of these texts (case-insensitive).
        near: (latitude, longitude); with ``radius_km``: taken within that great-circle distance.
        cwd: the folder relative path patterns are taken from (default: the current directory).
    """

    paths: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    min_width: int | None = None
    min_height: int | None = None
    after: str | date | datetime | None = None
    before: str | date | datetime | None = None
    cameras: tuple[str, ...] = ()
    near: tuple[float, float] | None = None
    radius_km: float | None = None
    cwd: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        for name in ("min_width", "min_height"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise QueryError(f"{name} must not be negative")
        # Validate now: bad input is an input error, not a search-time surprise.
        for p in (*self.paths, *self.exclude):
            glob_to_sqlite(p, self.cwd)
        for name in ("after", "before"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, parse_date(value))
        if self.after is not None and self.before is not None and self.after >= self.before:  # type: ignore[operator]
            raise QueryError(f"--after {self.after} is not earlier than --before {self.before}: nothing can match")
        object.__setattr__(self, "cameras", tuple(c.strip() for c in self.cameras))
        if any(not c for c in self.cameras):
            raise QueryError("empty camera filter")
        if self.radius_km is not None:
            if self.near is None:
                raise QueryError("a radius needs a position (--near LAT,LON)")
            if not (math.isfinite(self.radius_km) and self.radius_km > 0):
                raise QueryError(f"the radius must be a positive number of km, not {self.radius_km}")
        if self.near is not None:
            lat, lon = (float(x) for x in self.near)
            if not (-90 <= lat <= 90 and -180 <= lon <= 180):
                raise QueryError(f"bad position {self.near}: latitude within -90..90, longitude within -180..180")
            object.__setattr__(self, "near", (lat, lon))
            if self.radius_km is None:
                object.__setattr__(self, "radius_km", DEFAULT_RADIUS_KM)

    @property
    def active(self) -> bool:
        """True when any condition is set."""
        return bool(self.paths or self.exclude or self.min_width or self.min_height or self.after
                    or self.before or self.cameras or self.near)

    def with_cwd(self, cwd: str) -> Filters:
        return replace(self, cwd=cwd)


def _bounding_box(lat: float, lon: float, radius_km: float) -> list[Any]:
    """SQL conditions for a lat/lon box that holds every point within ``radius_km`` of (lat, lon)."""
    dlat = math.degrees(radius_km / EARTH_RADIUS_KM)
    conds: list[Any] = [ImageRow.gps_lat.is_not(None), ImageRow.gps_lon.is_not(None),
                        ImageRow.gps_lat.between(lat - dlat, lat + dlat)]
    if abs(lat) + dlat >= 90:  # the circle reaches a pole: every longitude
        return conds
    dlon = math.degrees(math.asin(min(1.0, math.sin(radius_km / EARTH_RADIUS_KM) / math.cos(math.radians(lat)))))
    if dlon >= 180:
        return conds
    lo, hi = lon - dlon, lon + dlon
    if lo < -180:  # across the antimeridian: two ranges
        conds.append(or_(ImageRow.gps_lon >= lo + 360, ImageRow.gps_lon <= hi))
    elif hi > 180:
        conds.append(or_(ImageRow.gps_lon >= lo, ImageRow.gps_lon <= hi - 360))
    else:
        conds.append(ImageRow.gps_lon.between(lo, hi))
    return conds


def filtered_ids(engine: Engine, filters: Filters) -> np.ndarray:
    """The ids (sorted) of every image that meets ``filters``, found by one SQL query.

    A position filter is a bounding box in SQL, then the exact great-circle
    distance (NumPy) over the rows inside the box only.
    """
    with engine.connect() as conn:
        conds = _conditions(filters, conn)
        # No ORDER BY: it would make SQLite walk the table (rows carry the embeddings)
        # in id order instead of using an index on the filtered columns; NumPy sorts.
        # Plain numbers: read them from the DBAPI cursor, skipping SQLAlchemy's per-row
        # result processing (most of the time of a 25k-row answer).
        if filters.near is None:
            rows = conn.execute(select(ImageRow.id).where(*conds)).cursor.fetchall()
            ids = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64, count=len(rows))
            return np.sort(ids)
        stmt = select(ImageRow.id, ImageRow.gps_lat, ImageRow.gps_lon).where(*conds)
        rows = conn.execute(stmt).cursor.fetchall()
    if not rows:
        return np.zeros(0, dtype=np.int64)
    arr = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.float64, count=3 * len(rows)).reshape(-1, 3)
    lat0, lon0 = filters.near
    keep = haversine_km(arr[:, 1], arr[:, 2], lat0, lon0) <= float(filters.radius_km or 0)
    return np.sort(arr[keep, 0].astype(np.int64))


def _conditions(filters: Filters, conn: Any) -> list[Any]:
    """SQL conditions (ANDed) for ``filters``."""
    conds: list[Any] = []

    def matches(pattern: str) -> Any:
        exact, glob = glob_to_sqlite(pattern, filters.cwd)
        cond = ImageRow.path.op("GLOB", is_comparison=True)(glob)
        return cond if exact is None else or_(ImageRow.path == exact, cond)

    if filters.paths:
        conds.append(or_(*(matches(p) for p in filters.paths)))
    for pattern in filters.exclude:
        conds.append(not_(matches(pattern)))
    if filters.min_width:
        conds.append(ImageRow.width >= filters.min_width)
    if filters.min_height:
        conds.append(ImageRow.height >= filters.min_height)
    # taken_at is local wall-clock ISO text: it sorts and compares as text.
    if filters.after is not None:
        conds.append(ImageRow.taken_at >= filters.after)
    if filters.before is not None:
        conds.append(ImageRow.taken_at < filters.before)
    if filters.cameras:
        # A collection holds a handful of distinct cameras: match the texts against
        # those (read from the camera index), then select the rows by exact value.
        wanted = [c.lower() for c in filters.cameras]
        cameras = conn.execute(select(ImageRow.camera_make, ImageRow.camera_model).distinct()).all()
        chosen = [(make, model) for make, model in cameras
                  if any(w in f"{make or ''} {model or ''}".lower() for w in wanted)]
        conds.append(or_(false(), *(
            and_(ImageRow.camera_make.is_(None) if make is None else ImageRow.camera_make == make,
                 ImageRow.camera_model.is_(None) if model is None else ImageRow.camera_model == model)
            for make, model in chosen
        )))
    if filters.near is not None:
        conds += _bounding_box(*filters.near, float(filters.radius_km or 0))
    return conds
