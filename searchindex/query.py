"""Queries as data: weighted terms, filters, and the adaptive relevance cutoff.

A query is a weighted sum of terms.  Each term is a text or an image file; its
embedding (unit length) is multiplied by its weight, the products are added,
and the sum is normalised again.  ``--minus`` terms simply carry a negative
weight.  Everything here is plain data and NumPy: no model, no FAISS, no SQL,
so the CLI can validate input before anything heavy is loaded.

Term syntax (CLI and :func:`parse_term`): ``[WEIGHT:][text:|image:]VALUE``.

- ``2:sunset`` is the text "sunset" with weight 2; ``0.5:beach.jpg`` an image
  term with weight 0.5.
- Without a prefix, a value that names an existing file is an image term; a
  value ending in an image extension (``.jpg``, ``.png``...) that names no file is
  an error (it was surely meant as a file); anything else is text.
- ``text:`` and ``image:`` force the kind (``text:1:1 scale model`` searches for
  the literal text "1:1 scale model").
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from pathlib import Path

import numpy as np

from .errors import QueryError

__all__ = [
    "AUTO_MIN_SIGNIFICANCE",
    "AUTO_WINDOW",
    "AUTO_Z_FALLBACK",
    "DEFAULT_RADIUS_KM",
    "EARTH_RADIUS_KM",
    "Filters",
    "Query",
    "Term",
    "auto_cutoff",
    "glob_to_sqlite",
    "haversine_km",
    "parse_date",
    "parse_near",
    "parse_term",
]

# Image extensions that make an unprefixed term an image term (mirrors images.IMAGE_EXTENSIONS,
# without importing Pillow).
_IMAGE_SUFFIXES = frozenset({
    ".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".avif", ".heic", ".heif",
})

# "2:", "0.5:", "1e-1:" ... and anything that starts like a number but is not one ("2..5:").
_WEIGHT_RE = re.compile(r"^\s*([0-9][0-9.eE+-]*|\.[0-9][0-9.eE+-]*)\s*:(.*)$", re.S)


@dataclass(frozen=True)
class Term:
    """One part of a composed query: a text or an image file, with a weight.

    Exactly one of ``text`` and ``image`` is set.  A negative weight pulls the
    results away from the term.
    """

    text: str | None = None
    image: str | None = None
    weight: float = 1.0

    def __post_init__(self) -> None:
        if (self.text is None) == (self.image is None):
            raise QueryError("a term is either a text or an image, not both or neither")
        if self.text is not None and not self.text.strip():
            raise QueryError("a text term is empty")
        if not math.isfinite(self.weight) or self.weight == 0:
            raise QueryError(f"a term's weight must be a non-zero number, not {self.weight}")

    @classmethod
    def of_text(cls, text: str, weight: float = 1.0) -> Term:
        return cls(text=text.strip(), weight=weight)

    @classmethod
    def of_image(cls, path: str | os.PathLike[str], weight: float = 1.0) -> Term:
        return cls(image=os.fspath(Path(path).expanduser()), weight=weight)

    def describe(self) -> str:
        what = repr(self.text) if self.text is not None else f"image {self.image}"
        return what if self.weight == 1 else f"{self.weight:g} x {what}"


def _parse_weight(raw: str, spec: str) -> float:
    try:
        weight = float(raw)
    except ValueError:
        raise QueryError(
            f"bad weight {raw!r} in {spec!r}: write a positive number before the colon, e.g. 2:sunset "
            "(or text:... for a text that starts with a number and a colon)"
        ) from None
    if not math.isfinite(weight) or weight <= 0:
        raise QueryError(f"bad weight {raw!r} in {spec!r}: weights are positive (use --minus to subtract a term)")
    return weight


def parse_term(spec: str, *, sign: float = 1.0, weight: float | None = None) -> Term:
    """Parse one CLI term (``[WEIGHT:][text:|image:]VALUE``) into a :class:`Term`.

    Args:
        sign: ``-1`` for ``--minus`` terms.
        weight: an explicit weight (``--plus-weight W TERM``); then ``spec`` carries none.

    Raises:
        QueryError: bad weight, empty term, or an image term whose file is missing.
    """
    value = spec
    if weight is None:
        m = _WEIGHT_RE.match(spec)
        if m:
            weight, value = _parse_weight(m.group(1), spec), m.group(2)
        else:
            weight = 1.0
    elif not math.isfinite(weight) or weight <= 0:
        raise QueryError(f"bad weight {weight} for {spec!r}: weights are positive (use --minus to subtract a term)")
    w = sign * weight
    if value.startswith("text:"):
        return Term.of_text(value[5:], w) if value[5:].strip() else _empty(spec)
    if value.startswith("image:"):
        return Term.of_image(image_file(value[6:]), w)
    if not value.strip():
        _empty(spec)
    kind = _file_kind(value)
    if kind == "file":
        return Term.of_image(Path(value).expanduser(), w)
    if kind == "other":
        image_file(value)  # raises: it names a FIFO, device or folder
    if Path(value).suffix.lower() in _IMAGE_SUFFIXES and "\n" not in value and kind is not None:
        raise QueryError(f"image term file not found: {value} (write text:{value} to search for the words)")
    return Term.of_text(value, w)


# Linux's PATH_MAX and NAME_MAX: a longer text cannot name a file, so it is never probed.
_PATH_MAX, _NAME_MAX = 4096, 255
_MAX_SIDE = 2**31 - 1


def _file_kind(value: str) -> str | None:
    """``"file"`` (a regular file), ``"other"`` (exists, not a regular file), ``"none"`` (could be a
    path, nothing there) or ``None`` (cannot be a path: too long, NUL bytes; a text for sure).

    An OS error while probing (permissions, a name too long for this filesystem) means "none":
    whether a text happens to be a path is never a reason for a query to fail.
    """
    raw = os.fsencode(os.path.expanduser(value)) if "\0" not in value else None
    if raw is None or len(raw) > _PATH_MAX or any(len(part) > _NAME_MAX for part in raw.split(b"/")):
        return None
    try:
        st = os.stat(raw)
    except (OSError, ValueError):
        return "none"
    import stat as _stat

    return "file" if _stat.S_ISREG(st.st_mode) else "other"


def image_file(value: str | os.PathLike[str]) -> Path:
    """``value`` as the path of an example image, or a :class:`QueryError` saying why it cannot be one."""
    text = os.fspath(value)
    kind = _file_kind(text)
    if kind == "file":
        return Path(text).expanduser()
    if kind == "other":
        from .fileio import describe_type

        raise QueryError(f"image term {text}: not a regular file ({describe_type(os.stat(text).st_mode)})")
    raise QueryError(f"image term file not found: {text[:200]}")


def _empty(spec: str) -> Term:
    raise QueryError(f"empty query term {spec!r}")


@dataclass(frozen=True)
class Query:
    """A weighted sum of terms.  Build with :meth:`parse` or ``Query((Term...,))``."""

    terms: tuple[Term, ...]

    def __post_init__(self) -> None:
        if not self.terms:
            raise QueryError("the query is empty: give a text, an image, or --plus terms")
        if not any(t.weight > 0 for t in self.terms):
            raise QueryError("a query needs at least one positive term (--minus alone has nothing to subtract from)")

    @classmethod
    def parse(
        cls,
        text: str | None = None,
        *,
        plus: Iterable[str] = (),
        minus: Iterable[str] = (),
        plus_weighted: Iterable[tuple[float, str]] = (),
        minus_weighted: Iterable[tuple[float, str]] = (),
        images: Iterable[str | os.PathLike[str]] = (),
    ) -> Query:
        """The CLI's query: ``QUERY``, ``--plus``, ``--minus``, ``--plus-weight``, ``--minus-weight``, ``--image``."""
        terms: list[Term] = []
        if text is not None:
            terms.append(parse_term(text))
        for image in images:
            terms.append(Term.of_image(image_file(image)))
        terms += [parse_term(s) for s in plus]
        terms += [parse_term(s, weight=w) for w, s in plus_weighted]
        terms += [parse_term(s, sign=-1) for s in minus]
        terms += [parse_term(s, sign=-1, weight=w) for w, s in minus_weighted]
        return cls(tuple(terms))

    @classmethod
    def coerce(cls, query: str | Term | Query | Sequence[Term]) -> Query:
        """Accept what :meth:`searchindex.Index.search` accepts: a text, a term, a query, or terms."""
        if isinstance(query, Query):
            return query
        if isinstance(query, Term):
            return cls((query,))
        if isinstance(query, str):
            if not query.strip():
                raise QueryError("the query text is empty")
            return cls((Term.of_text(query),))
        terms = tuple(query)
        if not all(isinstance(t, Term) for t in terms):
            raise QueryError("a query is a text, a Term, a Query, or a sequence of Terms")
        return cls(terms)

    def describe(self) -> str:
        return " + ".join(t.describe() for t in self.terms)


def combine(vectors: np.ndarray, weights: Sequence[float]) -> np.ndarray:
    """The unit-length weighted sum of unit-length term embeddings (one row per term)."""
    v = np.asarray(vectors, dtype=np.float32)
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    total = (np.asarray(weights, dtype=np.float32)[:, None] * v).sum(axis=0)
    norm = float(np.linalg.norm(total))
    if norm < 1e-6:
        raise QueryError("the query's terms cancel each other out")
    return (total / norm).astype(np.float32)


# -- filters ------------------------------------------------------------------

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
        return datetime(y or 1, mo or 1, d or 1, h or 0, mi or 0, sec or 0).isoformat()  # type: ignore[arg-type]
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

    @property
    def active(self) -> bool:
        """True when any condition is set."""
        return bool(self.paths or self.exclude or self.min_width or self.min_height or self.after
                    or self.before or self.cameras or self.near)

    def with_cwd(self, cwd: str) -> Filters:
        return replace(self, cwd=cwd)


# -- adaptive cutoff ------------------------------------------------------------

#: Below-gap window: each gap is compared with the mean of this many (rank-scaled) gaps after it.
AUTO_WINDOW = 32
#: A gap counts as a break when it is this many times larger than expected from the scores below it.
AUTO_MIN_SIGNIFICANCE = 10.0
#: Fallback when no break exists: keep scores this many robust standard deviations above the background.
AUTO_Z_FALLBACK = 4.0


def auto_cutoff(scores: np.ndarray, background: np.ndarray | None = None, *, exhaustive: bool = True) -> int:
    """How many of ``scores`` (sorted, best first) stand out for their query.

    The method, in two steps:

    1. *A break in the ranking.*  Below the true matches, scores thin out smoothly;
       a real boundary shows as a gap much wider than the gaps after it.  Gaps
       near the top of a ranking are naturally wider (the top of a distribution's
       tail is sparse), so each gap ``g_i`` after rank ``i`` is scaled by ``i``
       (for an exponential tail the scaled gaps ``i*g_i`` are identically
       distributed: Rényi's representation of order statistics), and compared with
       the mean scaled gap of the :data:`AUTO_WINDOW` ranks below it.  A ratio of at
       least :data:`AUTO_MIN_SIGNIFICANCE` is a break.  Of all breaks, the widest
       (largest raw score gap) is the cut: it separates the strongest tier of
       matches from what follows.  Only gaps above the median of ``background``
       count: a break among scores worse than a typical image's is no match.
    2. *No break: outliers over the background.*  When the scores form no tiers
       (common with large models on real photos), keep those at least
       :data:`AUTO_Z_FALLBACK` robust standard deviations (1.4826 x MAD) above the
       median of ``background``, a sample of the scores of the whole searched set.

    If neither finds anything, nothing stands out and the answer is 0.

    Args:
        scores: the top scores of a query, best first.
        background: scores of a random sample of the searched images (for step 2).
        exhaustive: ``scores`` holds every searched image; otherwise breaks are
            only looked for where a full window of ranks follows.
    """
    s = np.asarray(scores, dtype=np.float64)
    n = len(s)
    if n == 0:
        return 0
    if n >= 2:
        gaps = s[:-1] - s[1:]  # gaps[i] separates rank i+1 from rank i+2
        scaled = gaps * np.arange(1, n)
        # Mean of the next AUTO_WINDOW scaled gaps, by prefix sums.
        csum = np.concatenate([[0.0], np.cumsum(scaled)])
        idx = np.arange(n - 1)
        hi = np.minimum(idx + 1 + AUTO_WINDOW, n - 1)
        count = hi - (idx + 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            below = (csum[hi] - csum[idx + 1]) / np.maximum(count, 1)
        # Identical scores below (exact duplicates) must not make any gap infinitely significant.
        floor = max(1e-6, float(np.median(scaled)) * 1e-3)
        ratio = scaled / np.maximum(below, floor)
        min_count = AUTO_WINDOW if not exhaustive else min(AUTO_WINDOW, 8)
        usable = count >= min_count
        if background is not None and len(background):
            # A break among scores below what a typical image gets is not "standing out":
            # only gaps whose lower side is above the background median count.
            usable &= s[1:] > float(np.median(background))
        breaks = np.flatnonzero(usable & (ratio >= AUTO_MIN_SIGNIFICANCE))
        if len(breaks):
            best = breaks[np.argmax(gaps[breaks])]
            return int(best) + 1
    if background is not None and len(background) >= 8:
        bg = np.asarray(background, dtype=np.float64)
        med = float(np.median(bg))
        sigma = 1.4826 * float(np.median(np.abs(bg - med)))
        if sigma > 0:
            return int(np.count_nonzero(s >= med + AUTO_Z_FALLBACK * sigma))
    return 0
