"""Search filters: the conditions a result must meet.

:class:`Filters` is plain data, validated on construction (bad input is an
input error, never a search-time surprise);
:meth:`~searchindex.store.catalog.reader.CatalogReader.filtered_ids` resolves it into the
sorted ids of every matching image with one SQL query, which the vector index
then ranks exactly.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from datetime import date, datetime

import numpy as np

from ...cjk import fts_terms
from ...errors import QueryError

__all__ = [
    "DEFAULT_RADIUS_KM",
    "EARTH_RADIUS_KM",
    "Filters",
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
    return np.asarray(2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0, 1))))


_MAX_SIDE = 2**31 - 1


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
        ocr_text: the text read in the photo (``searchindex ocr``) must hold every word of this
            (a Korean word anywhere inside a run of Hangul, as keyword search matches it).
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
    ocr_text: str | None = None
    cwd: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        for name in ("min_width", "min_height"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise QueryError(f"{name} must not be negative")
            if value is not None and value > _MAX_SIDE:
                # SQLite integers stop at 2^63; no image is anywhere near this wide.
                raise QueryError(f"{name} {value} is larger than any image can be (at most {_MAX_SIDE:,})")
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
        if self.ocr_text is not None and not self.ocr_match():
            raise QueryError(f"--ocr-text {self.ocr_text!r} has no words to look for")

    @property
    def active(self) -> bool:
        """True when any condition is set."""
        return bool(self.paths or self.exclude or self.min_width or self.min_height or self.after
                    or self.before or self.cameras or self.near or self.ocr_text)

    def ocr_match(self) -> str:
        """The FTS5 expression of :attr:`ocr_text` over the read text (every word, CJK as bigrams)."""
        words = dict.fromkeys(w.casefold() for w in re.findall(r"[^\W_]+", self.ocr_text or ""))
        return " AND ".join(t for w in words for t in fts_terms(w))

