"""One search request, checked once for every front end.

``searchindex search`` and the web API (``GET /api/search``) both turn what
they were given into a :class:`SearchRequest` with :func:`search_request`, so a
bad value gets the same message from both, and the same parameters run the same
search.  Values may arrive as text (HTTP query strings) or already typed (click).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .defaults import DEFAULT_K, DEFAULT_POOL, DEFAULT_RERANK_TOP
from .errors import ParameterError

if TYPE_CHECKING:
    from .index import Index, SearchResult
    from .query import Filters, Query

__all__ = ["DEFAULT_K", "SearchRequest", "example_ids", "search_request"]

_MODES = ("auto", "vector", "text", "hybrid")
_SORTS = ("score", "date")


def _int(value: Any, flag: str, param: str, minimum: int) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ParameterError(f"{flag} must be a whole number, not {value!r}", param) from None
    if n < minimum:
        raise ParameterError(f"{flag} must be at least {minimum}, not {n}", param)
    return n


def _float(value: Any, flag: str, param: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ParameterError(f"{flag} must be a number, not {value!r}", param) from None
    if x != x:  # NaN
        raise ParameterError(f"{flag} must be a number, not {value!r}", param)
    return x


def _choice(value: Any, flag: str, param: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ParameterError(f"{flag} must be one of {', '.join(choices)}, not {value!r}", param)
    return str(value)


def _image_id(value: Any, flag: str, param: str) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    raise ParameterError(f"{flag} takes an image_id (a whole number from the results), not {value!r}", param)


def _shot(value: Any) -> str | int:
    """An example image: an int id, an existing file, else digits as an id, else a path (reported later)."""
    if isinstance(value, int):
        return value
    value = os.fspath(value)
    if not os.path.exists(value) and value.isdigit():
        return int(value)
    return value


@dataclass(frozen=True)
class SearchRequest:
    """A checked search: what :meth:`run` passes to :meth:`Index.search`, plus paging."""

    query: Query
    k: int | None  # results per page; None: every result that passes the cutoff
    offset: int
    filters: Filters
    min_score: float | None = None
    threshold: str | None = None
    sort: str = "score"
    tag: str | None = None
    like: tuple[str | int, ...] = ()
    unlike: tuple[str | int, ...] = ()
    pool: int = DEFAULT_POOL
    mode: str = "auto"
    rerank: str | None = None
    rerank_top: int = DEFAULT_RERANK_TOP
    rerank_model: str | None = None

    def run(self, index: Index) -> list[SearchResult]:
        """The results of page ``offset // k``: ranks count from the first page."""
        limit = None if self.k is None else self.k + self.offset
        results = index.search(
            self.query, k=limit, filters=self.filters, min_score=self.min_score, threshold=self.threshold,
            sort=self.sort, tag=self.tag, like=list(self.like), unlike=list(self.unlike), pool=self.pool,
            mode=self.mode, rerank=self.rerank, rerank_top=self.rerank_top, rerank_model=self.rerank_model,
        )
        return results[self.offset:]

    def empty_message(self) -> str:
        """Why a search found nothing, in words."""
        if self.mode == "text":
            return "No image's keywords, captions or file name contain the query's words."
        if self.threshold == "auto":
            return "Nothing stands out for this query (use -k N or --min-score X to see the best matches anyway)."
        if self.min_score is not None:
            return f"No result scores {self.min_score} or more."
        if self.filters.active or self.tag is not None:
            return "No results: no indexed image matches the filters, or none scores high enough."
        if self.offset:
            return "No more results."
        return "No results (the index is empty)."


def search_request(
    index: Index | None,
    text: str | None = None,
    *,
    images: Sequence[Any] = (),
    plus: Sequence[str] = (),
    minus: Sequence[str] = (),
    plus_weighted: Sequence[tuple[float, str]] = (),
    minus_weighted: Sequence[tuple[float, str]] = (),
    k: Any = None,
    offset: Any = 0,
    threshold: Any = None,
    min_score: Any = None,
    paths: Sequence[str] = (),
    exclude: Sequence[str] = (),
    min_width: Any = None,
    min_height: Any = None,
    after: str | None = None,
    before: str | None = None,
    cameras: Sequence[str] = (),
    near: str | None = None,
    radius: Any = None,
    sort: str = "score",
    tag: str | None = None,
    like: Sequence[Any] = (),
    unlike: Sequence[Any] = (),
    pool: Any = DEFAULT_POOL,
    mode: str = "auto",
    rerank: str | None = None,
    rerank_top: Any = DEFAULT_RERANK_TOP,
    rerank_model: str | None = None,
    concept: str | None = None,
    cwd: str | None = None,
) -> SearchRequest:
    """Check search parameters as the CLI names them and build the request.

    Args:
        index: resolves ``concept`` and image ids given as ``images`` (may be
            ``None`` when neither is used).
        text: the query text; with ``concept``, replaces the concept's text.
        images: example images for the query: file paths, or ``int`` image ids.
        k: results per page; ``None`` for the default (10, or all that pass a cutoff).
        offset: results to skip (paging); ranks still count from the first result.
        threshold: ``"auto"``, or a number (same as ``min_score``).
        like, unlike: example images for the few-shot reranker: ids, or paths (the
            CLI also takes digits as an id when no such file exists).
        concept: the name of a saved concept: its text (unless ``text`` is
            given) and its examples join the request.
        cwd: the folder relative ``paths``/``exclude`` patterns start from.

    Raises:
        ParameterError: a bad value; the message names the option as the CLI does.
        NotFoundError: an unknown concept or image id.
        QueryError: a query or filter that cannot be run (bad date, glob, term, ...).
    """
    from .query import Filters, Query, parse_near

    like_shots = [_shot(v) for v in like]
    unlike_shots = [_shot(v) for v in unlike]
    if concept is not None:
        if index is None:
            raise ParameterError("--concept needs an index", "concept")
        saved = index.concept(concept)
        text = text if text else saved.query
        like_shots += [i for i in saved.like if i not in like_shots]
        unlike_shots += [i for i in saved.unlike if i not in unlike_shots]
    image_paths: list[str] = []
    for value in images:
        if isinstance(value, int):
            if index is None:
                raise ParameterError("an image id needs an index", "image")
            image_paths.append(index.image(value).path)
        else:
            image_paths.append(os.fspath(value))
    if text is not None and not text.strip() and not image_paths and not plus and not plus_weighted:
        text = None
    if text is None and not image_paths and not plus and not plus_weighted:
        raise ParameterError("give a text QUERY, --image PATH, or --plus TERM", "q")

    cut: str | None = None
    score = None if min_score is None or min_score == "" else _float(min_score, "--min-score", "min_score")
    if score is not None and not -1 <= score <= 1:
        raise ParameterError(f"--min-score is a cosine similarity between -1 and 1, not {score}", "min_score")
    if threshold is not None and threshold != "":
        if threshold == "auto":
            cut = "auto"
        else:
            try:
                number = float(threshold)
            except (TypeError, ValueError):
                raise ParameterError(f"--threshold {threshold!r} is neither 'auto' nor a number",
                                     "threshold") from None
            if not -1 <= number <= 1:
                raise ParameterError("--threshold: a score threshold is between -1 and 1", "threshold")
            score = number if score is None else max(score, number)
    if k is None or k == "":
        limit: int | None = None if (cut or score is not None) else DEFAULT_K
    else:
        limit = _int(k, "-k", "k", 1)
    skip = _int(offset if offset not in (None, "") else 0, "--offset", "offset", 0)
    if radius not in (None, "") and near in (None, ""):
        raise ParameterError("--radius needs --near LAT,LON", "radius")
    radius_km = None if radius in (None, "") else _float(radius, "--radius", "radius")
    if radius_km is not None and radius_km <= 0:
        raise ParameterError(f"--radius must be a positive number of km, not {radius_km}", "radius")
    width = None if min_width in (None, "") else _int(min_width, "--min-width", "min_width", 1)
    height = None if min_height in (None, "") else _int(min_height, "--min-height", "min_height", 1)
    q = Query.parse(text, plus=plus, minus=minus, plus_weighted=plus_weighted, minus_weighted=minus_weighted,
                    images=image_paths)
    filters = Filters(paths=tuple(paths), exclude=tuple(exclude), min_width=width, min_height=height,
                      after=after or None, before=before or None, cameras=tuple(c for c in cameras if c),
                      near=parse_near(near) if near else None, radius_km=radius_km,
                      cwd=cwd if cwd is not None else os.getcwd())
    return SearchRequest(
        query=q, k=limit, offset=skip, filters=filters, min_score=score, threshold=cut,
        sort=_choice(sort or "score", "--sort", "sort", _SORTS), tag=tag or None,
        like=tuple(like_shots), unlike=tuple(unlike_shots),
        pool=_int(pool, "--pool", "pool", 1), mode=_choice(mode or "auto", "--mode", "mode", _MODES),
        rerank=_choice(rerank, "--rerank", "rerank", ("itm",)) if rerank else None,
        rerank_top=_int(rerank_top, "--rerank-top", "rerank_top", 1), rerank_model=rerank_model or None,
    )


def example_ids(values: Sequence[Any], flag: str, param: str) -> list[int]:
    """Image ids given as text or numbers (the API's ``image``, ``like`` and ``unlike``)."""
    return [_image_id(v, flag, param) for v in values]
