"""A front end's search parameters, checked once for every front end.

``searchindex search`` and the web API (``GET /api/search``) both turn what
they were given into :class:`SearchParams` with :func:`search_params`: the
query, a :class:`~searchindex.search.request.SearchRequest`, and a page offset.
So a bad value gets the same message from both, and the same parameters run the
same search.  Values may arrive as text (HTTP query strings) or already typed (click).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..defaults import DEFAULT_K, DEFAULT_POOL, DEFAULT_RERANK_TOP, SEARCH_MODES, SORT_KEYS
from ..errors import ParameterError, QueryError
from .query import Query
from .request import SearchRequest, parse_shot, parse_threshold

if TYPE_CHECKING:
    from ..index import Index
    from ..results import SearchResult

__all__ = ["SearchParams", "example_ids", "search_params"]


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
    """An example image: an int id as is; text as ``--like`` reads it (a file, else digits as an id)."""
    if isinstance(value, int):
        return value
    shot = parse_shot(os.fspath(value))
    return shot if isinstance(shot, int) else os.fspath(shot)


@dataclass(frozen=True)
class SearchParams:
    """A checked search: the query, the options (:class:`SearchRequest`), and the page."""

    query: Query
    request: SearchRequest  # its ``k`` reaches to the end of the page: offset + page size
    offset: int = 0

    @property
    def k(self) -> int | None:
        """Results per page; ``None``: every result that passes the cutoff."""
        return None if self.request.k is None else self.request.k - self.offset

    def run(self, index: Index) -> list[SearchResult]:
        """The results of this page; ranks count from the first page."""
        return index.search(self.query, request=self.request)[self.offset:]

    def empty_message(self) -> str:
        """Why a search found nothing, in words."""
        r = self.request
        if r.mode == "text":
            return "No image's keywords, captions or file name contain the query's words."
        if r.threshold == "auto":
            return "Nothing stands out for this query (use -k N or --min-score X to see the best matches anyway)."
        if r.min_score is not None:
            return f"No result scores {r.min_score} or more."
        if (r.filters is not None and r.filters.active) or r.tag is not None:
            return "No results: no indexed image matches the filters, or none scores high enough."
        if self.offset:
            return "No more results."
        return "No results (the index is empty)."


def search_params(
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
    ocr_text: str | None = None,
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
) -> SearchParams:
    """Check search parameters as the CLI names them and build the search.

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
    from ..store.catalog.filters import Filters, parse_near

    like_shots = [_shot(v) for v in like]
    unlike_shots = [_shot(v) for v in unlike]
    if concept is not None:
        text = _add_concept(index, concept, text, like_shots, unlike_shots)
    image_paths = _image_paths(index, images)
    if text is not None and not text.strip() and not image_paths and not plus and not plus_weighted:
        text = None
    if text is None and not image_paths and not plus and not plus_weighted:
        raise ParameterError("give a text QUERY, --image PATH, or --plus TERM", "q")
    limit, score, cut = _cutoffs(k, threshold, min_score)
    skip = _int(offset if offset not in (None, "") else 0, "--offset", "offset", 0)
    width, height, radius_km = _filter_numbers(min_width, min_height, near, radius)
    q = Query.parse(text, plus=plus, minus=minus, plus_weighted=plus_weighted, minus_weighted=minus_weighted,
                    images=image_paths)
    # A blank camera (empty or spaces, as an empty form field sends) is not given, like a blank date.
    filters = Filters(paths=tuple(paths), exclude=tuple(exclude), min_width=width, min_height=height,
                      after=after or None, before=before or None, cameras=tuple(c for c in cameras if c.strip()),
                      near=parse_near(near) if near else None, radius_km=radius_km,
                      ocr_text=ocr_text if ocr_text and ocr_text.strip() else None,
                      cwd=cwd if cwd is not None else os.getcwd())
    request = SearchRequest(
        k=None if limit is None else limit + skip, filters=filters, min_score=score, threshold=cut,
        sort=_choice(sort or "score", "--sort", "sort", SORT_KEYS), tag=tag or None,
        like=tuple(like_shots), unlike=tuple(unlike_shots),
        pool=_int(pool, "--pool", "pool", 1), mode=_choice(mode or "auto", "--mode", "mode", SEARCH_MODES),
        rerank=_choice(rerank, "--rerank", "rerank", ("itm",)) if rerank else None,
        rerank_top=_int(rerank_top, "--rerank-top", "rerank_top", 1), rerank_model=rerank_model or None,
    )
    return SearchParams(q, request, skip)


def _add_concept(index: Index | None, concept: str, text: str | None, like: list[str | int],
                 unlike: list[str | int]) -> str | None:
    """Add the saved concept's examples to ``like``/``unlike``; returns the query text (``text``, else
    the concept's)."""
    if index is None:
        raise ParameterError("--concept needs an index", "concept")
    saved = index.concept(concept)
    like += [i for i in saved.like if i not in like]
    unlike += [i for i in saved.unlike if i not in unlike]
    return text if text else saved.query


def _image_paths(index: Index | None, images: Sequence[Any]) -> list[str]:
    """The files of the query's example images (ids looked up in ``index``)."""
    image_paths: list[str] = []
    for value in images:
        if isinstance(value, int):
            if index is None:
                raise ParameterError("an image id needs an index", "image")
            image_paths.append(index.image(value).path)
        else:
            image_paths.append(os.fspath(value))
    return image_paths


def _cutoffs(k: Any, threshold: Any, min_score: Any) -> tuple[int | None, float | None, str | None]:
    """(results before paging, minimum score, adaptive cutoff) from ``-k``, ``--threshold`` and
    ``--min-score``: a numeric threshold is a minimum score, and no ``-k`` with a cutoff means no limit."""
    score = None if min_score is None or min_score == "" else _float(min_score, "--min-score", "min_score")
    if score is not None and not -1 <= score <= 1:
        raise ParameterError(f"--min-score is a cosine similarity between -1 and 1, not {score}", "min_score")
    try:
        cut = parse_threshold(None if threshold == "" else threshold)
    except QueryError as exc:
        raise ParameterError(f"--threshold: {exc}", "threshold") from None
    if isinstance(cut, float):
        score = cut if score is None else max(score, cut)
        cut = None
    if k is None or k == "":
        limit: int | None = None if (cut or score is not None) else DEFAULT_K
    else:
        limit = _int(k, "-k", "k", 1)
    return limit, score, cut


def _filter_numbers(min_width: Any, min_height: Any, near: str | None,
                    radius: Any) -> tuple[int | None, int | None, float | None]:
    """(min width, min height, radius in km) checked; an empty value is none."""
    if radius not in (None, "") and near in (None, ""):
        raise ParameterError("--radius needs --near LAT,LON", "radius")
    radius_km = None if radius in (None, "") else _float(radius, "--radius", "radius")
    if radius_km is not None and radius_km <= 0:
        raise ParameterError(f"--radius must be a positive number of km, not {radius_km}", "radius")
    width = None if min_width in (None, "") else _int(min_width, "--min-width", "min_width", 1)
    height = None if min_height in (None, "") else _int(min_height, "--min-height", "min_height", 1)
    return width, height, radius_km


def example_ids(values: Sequence[Any], flag: str, param: str) -> list[int]:
    """Image ids given as text or numbers (the API's ``image``, ``like`` and ``unlike``)."""
    return [_image_id(v, flag, param) for v in values]
