"""A front end's search, checked once for every front end.

``searchindex search`` and the web API (``GET /api/search``) both turn what they were
given into :class:`SearchParams` with :func:`search_params`: the query, a
:class:`~searchindex.search.request.SearchRequest`, and a page offset.  Both read the
options from one description (:data:`~searchindex.frontend.options.SEARCH_OPTIONS`), so a
bad value gets the same message from both, and the same parameters run the same search.
Values may arrive as text (HTTP query strings) or already typed (click).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ParameterError, QueryError
from ..search.names import split_person_names
from ..search.query import Query, Term
from ..search.request import Moment, SearchRequest, parse_moment
from ..store.catalog.filters import Filters
from .options import SEARCH_OPTIONS, TARGETS, SearchOption

if TYPE_CHECKING:
    from ..index.facade import Index
    from ..results import SearchResult

__all__ = ["SearchParams", "example_ids", "search_params"]


@dataclass(frozen=True)
class SearchParams:
    """A checked search: the query, the options (:class:`SearchRequest`), and the page."""

    query: Query
    request: SearchRequest  # its ``k`` reaches to the end of the page: offset + page size
    offset: int = 0
    names_in_text: bool = False  # the query text's first term may name persons (see search/names.py)

    @property
    def k(self) -> int | None:
        """Results per page; ``None``: every result that passes the cutoff."""
        return None if self.request.k is None else self.request.k - self.offset

    def run(self, index: Index) -> list[SearchResult]:
        """The results of this page; ranks count from the first page.  Person names in the query
        text become person filters (:mod:`searchindex.search.names`)."""
        query, request = self.query, self.request
        index.follow_folder()  # the names below are read from the folder's catalog as it is now
        first = query.terms[0]
        if self.names_in_text and first.text is not None and first.weight > 0:
            names = index.catalog.read.named_persons()
            rest, found = split_person_names(first.text, names) if names or "@" in first.text else (first.text, [])
            if found:
                query = Query((Term.of_text(rest, first.weight), *query.terms[1:]))
                known = {p.casefold() for p in request.persons}
                request = dataclasses.replace(request, persons=tuple(request.persons) + tuple(
                    n for n in found if n.casefold() not in known))
        return index.search(query, request=request)[self.offset:]

    def empty_message(self) -> str:
        """Why a search found nothing, in words."""
        r = self.request
        if r.mode == "text":
            return "No image's keywords, captions or file name contain the query's words."
        if r.threshold == "auto":
            return "Nothing stands out for this query (use -k N or --min-score X to see the best matches anyway)."
        if r.min_score is not None:
            return f"No result scores {r.min_score} or more."
        if (r.filters is not None and r.filters.active) or r.tag is not None or r.persons:
            return "No results: no indexed image matches the filters, or none scores high enough."
        if self.offset:
            return "No more results."
        return "No results (the index is empty)."


def search_params(index: Index | None, query: str | None = None, *, cwd: str | None = None,
                  options: Sequence[SearchOption] = SEARCH_OPTIONS, **given: Any) -> SearchParams:
    """Check a search's options, as a front end was given them, and build the search.

    Args:
        index: resolves ``concept`` and image ids given as ``images`` (may be
            ``None`` when neither is used).
        query: the query text; with ``concept``, replaces the concept's text.
        cwd: the folder relative ``paths``/``exclude`` patterns start from.
        options: the description the values follow (the search's own unless a test
            brings another).
        given: the other options by name (``k``, ``paths``, ``images``, ...: see
            :data:`~searchindex.frontend.options.SEARCH_OPTIONS`); text or typed;
            ``images``, ``like`` and ``unlike`` take ``int`` image ids or paths.

    Raises:
        TypeError: an option that ``options`` does not describe.
        ParameterError: a bad value; the message names the option as the CLI does.
        NotFoundError: an unknown concept or image id.
        QueryError: a query or filter that cannot be run (bad date, glob, term, ...).
    """
    described = {o.name: o for o in options}
    unknown = sorted(set(given) - set(described))
    if unknown:
        raise TypeError(f"search_params() got unknown options: {', '.join(unknown)}")
    given["query"] = query
    _require_needed(given, described)
    parts: dict[str, dict[str, Any]] = {target: {} for target in TARGETS}
    for option in options:
        where, field = option.target
        parts[where][field] = option.read(given.get(option.name))
    terms, request = parts["query"], parts["request"]
    concept = parts["concept"].get("concept")
    if concept is not None:
        terms["text"] = _add_concept(index, concept, terms.get("text"), request)
    terms["images"] = _image_paths(index, terms.get("images", ()))
    text = terms.pop("text", None)
    some_term = terms["images"] or terms.get("plus") or terms.get("plus_weighted")
    if text is not None and not text.strip() and not some_term:
        text = None
    if text is None and not some_term:
        raise ParameterError("give a text QUERY, --image PATH, or --plus TERM", described["query"].param)
    filters = Filters(**parts["filters"], cwd=cwd if cwd is not None else os.getcwd())
    # SearchRequest decides what the options leave open: no k means 10, or no limit with a cutoff.
    search = SearchRequest.from_options(filters=filters, **request)
    skip: int = parts["page"].get("offset") or 0
    if skip and search.k is not None:
        search = search.replace(k=search.k + skip)
    return SearchParams(Query.parse(text, **terms), search, skip, names_in_text=text is not None and concept is None)


def _require_needed(given: dict[str, Any], described: dict[str, SearchOption]) -> None:
    """An option given without the one it needs (``--radius`` without ``--near``): said before the
    option's own value is checked."""
    for option in described.values():
        other = described.get(option.needs or "")
        if other is not None and given.get(option.name) not in (None, "", ()) \
                and given.get(other.name) in (None, "", ()):
            raise ParameterError(f"{option.flag} needs {other.flag} {other.metavar or ''}".rstrip(), option.param)


def _add_concept(index: Index | None, concept: str, text: str | None, request: dict[str, Any]) -> str | None:
    """Add the saved concept's examples to the request's ``like``/``unlike``; returns the query text
    (``text``, else the concept's)."""
    if index is None:
        raise ParameterError("--concept needs an index", "concept")
    saved = index.concept(concept)
    for name, examples in (("like", saved.like), ("unlike", saved.unlike)):
        mine = request.setdefault(name, [])
        request[name] = list(mine) + [i for i in examples if i not in mine]
    return text if text else saved.query


def _image_paths(index: Index | None, images: Sequence[Any]) -> list[str]:
    """The files of the query's example images (ids looked up in ``index``)."""
    image_paths: list[str] = []
    for value in images:
        if isinstance(value, Moment):
            raise ParameterError(f"--image takes an image_id, not the moment {value} (like the moment instead: "
                                 f"like={value})", "image")
        if isinstance(value, int):
            if index is None:
                raise ParameterError("an image id needs an index", "image")
            image_paths.append(index.image(value).path)
        else:
            image_paths.append(os.fspath(value))
    return image_paths


def example_ids(values: Sequence[Any], flag: str, param: str) -> list[int | Moment]:
    """Image ids given as text or numbers (the API's ``image``, ``like`` and ``unlike``), and moments
    of videos as ``ID@SECONDS`` (``like``/``unlike`` take them; ``image`` refuses them later).

    Raises:
        ParameterError: a value that is neither an image id nor a moment.
    """
    ids: list[int | Moment] = []
    for value in values:
        if isinstance(value, (int, Moment)):
            ids.append(value)
        elif isinstance(value, str) and value.isdigit():
            ids.append(int(value))
        elif isinstance(value, str) and "@" in value and (shot := _moment(value, flag, param)) is not None:
            ids.append(shot)
        else:
            raise ParameterError(f"{flag} takes an image_id (a whole number from the results), not {value!r}",
                                 param)
    return ids


def _moment(value: str, flag: str, param: str) -> Moment | None:
    """``ID@SECONDS`` as a moment; ``None`` when the text is not of that form."""
    try:
        shot = parse_moment(value)
    except QueryError as exc:
        raise ParameterError(f"{flag}: {exc}", param) from None
    return shot
