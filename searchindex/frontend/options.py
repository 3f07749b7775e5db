"""Every option of a search, described once: the CLI, the web API and the library read it from here.

A :class:`SearchOption` says what an option is called in each front end (the CLI's
flags, the API's query parameter), its type, default and help text, how a value given
as text (a query string) or already typed (click) is checked, and where the checked
value goes: a field of :class:`~searchindex.store.catalog.filters.Filters`, of
:class:`~searchindex.search.request.SearchRequest`, of the query, or the page.
``searchindex search`` derives its click options from :data:`SEARCH_OPTIONS`,
``GET /api/search`` its query parameters, and
:func:`searchindex.frontend.params.search_params` the search, so adding a filter is one
entry here plus its implementation (docs/architecture.md, "Adding a search option").

This module imports nothing heavy (``searchindex --help`` reads it): the checks that
need the library import it when they run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..defaults import DEFAULT_ITM_MODEL, DEFAULT_POOL, DEFAULT_RERANK_TOP, RERANKERS, SEARCH_MODES, SORT_KEYS
from ..errors import ParameterError, QueryError

__all__ = ["SEARCH_OPTIONS", "TARGETS", "SearchOption", "option_named"]

#: Where a checked value goes (``SearchOption.to`` is ``TARGET.FIELD``, or ``concept``):
#: ``query``: a keyword of :meth:`~searchindex.search.query.Query.parse` (``text``, ``images``
#: and ``plus`` are the query's own; ``images`` by id are looked up in the index);
#: ``filters``: a field of ``Filters``; ``request``: a keyword of ``SearchRequest.from_options``
#: (which decides what ``k`` and ``threshold`` leave open); ``page``: ``offset``;
#: ``concept``: a saved concept's name, whose text and examples join the query and request.
TARGETS = ("query", "filters", "request", "page", "concept")


@dataclass(frozen=True)
class SearchOption:
    """One option of a search, as every front end spells it.

    Args:
        name: the keyword of :func:`~searchindex.frontend.params.search_params` and the
            name of the click parameter.
        to: where the checked value goes: ``TARGET.FIELD`` (see :data:`TARGETS`).
        help: the CLI's help text (also the API's description, unless ``api_help``).
        flags: the CLI's flags; none: the positional argument (``QUERY``).
        type: ``str``, ``int``, ``float``, ``Path`` (a file), or a tuple of types (a value of
            several parts, such as ``--plus-weight W TERM``; the CLI only).
        default: the value when not given (a blank text is not given either).
        multiple: repeatable; the value is a tuple.
        choices: the values a text option takes.
        minimum: the least whole number an ``int`` option takes.
        api: the API's query parameter; ``None``: the CLI only.
        api_ids: the API takes image_ids (a page sends no files; the CLI takes paths too).
        needs: the name of an option this one means nothing without (``--radius`` needs ``--near``).
        check: a check of its own, ``check(option, value) -> value``, instead of the type's;
            for a repeatable option it gets the tuple.
    """

    name: str
    to: str
    help: str
    flags: tuple[str, ...] = ()
    type: Any = str
    default: Any = None
    multiple: bool = False
    metavar: str | None = None
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    show_default: bool = False
    api: str | None = None
    api_help: str | None = None
    api_ids: bool = False
    needs: str | None = None
    check: Callable[[SearchOption, Any], Any] | None = None

    def __post_init__(self) -> None:
        if self.to.partition(".")[0] not in TARGETS:
            raise ValueError(f"{self.name}: `to` starts with one of {', '.join(TARGETS)}, not {self.to!r}")

    @property
    def flag(self) -> str:
        """What a message calls the option: its long flag (``--min-width``), ``-k``, or ``QUERY``."""
        long = [f for f in self.flags if f.startswith("--")]
        return (long or list(self.flags) or [self.name.upper()])[0]

    @property
    def param(self) -> str:
        """The parameter a :class:`~searchindex.errors.ParameterError` names: the API's name, else ``name``."""
        return self.api or self.name

    @property
    def target(self) -> tuple[str, str]:
        """(``query``/``filters``/``request``/``page``/``concept``, the field there)."""
        where, _, field = self.to.partition(".")
        return where, field or where

    def read(self, value: Any) -> Any:
        """The checked value of a given one (text, or typed); not given or blank: the default.

        Raises:
            ParameterError: a bad value; the message names the option as the CLI does.
            QueryError: a value the library refuses (a bad position, ...).
        """
        if value is None or (isinstance(value, str) and value == ""):
            return () if self.multiple else self.default
        if self.multiple:
            value = (value,) if isinstance(value, (str, os.PathLike)) else tuple(value)
            if self.check is not None:
                return self.check(self, value)
            return tuple(self._one(v) for v in value)
        return self.check(self, value) if self.check is not None else self._one(value)

    def _one(self, value: Any) -> Any:
        if self.type is int:
            return whole_number(self, value)
        if self.type is float:
            return number(self, value)
        if self.choices:
            if value not in self.choices:
                raise ParameterError(f"{self.flag} must be one of {', '.join(self.choices)}, not {value!r}",
                                     self.param)
            return str(value)
        if self.type is Path:  # a file, or (from the API) an image id or moment, checked where it is used
            return os.fspath(value) if isinstance(value, (str, os.PathLike)) else value
        return value


def option_named(name: str, options: Sequence[SearchOption] | None = None) -> SearchOption:
    """The option called ``name`` (in :data:`SEARCH_OPTIONS` unless ``options``).

    Raises:
        KeyError: no such option.
    """
    for option in SEARCH_OPTIONS if options is None else options:
        if option.name == name:
            return option
    raise KeyError(name)


# -- the checks of options that need more than their type ------------------------------------------

def whole_number(option: SearchOption, value: Any) -> int:
    """A whole number, at least the option's ``minimum``."""
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ParameterError(f"{option.flag} must be a whole number, not {value!r}", option.param) from None
    if option.minimum is not None and n < option.minimum:
        raise ParameterError(f"{option.flag} must be at least {option.minimum}, not {n}", option.param)
    return n


def number(option: SearchOption, value: Any) -> float:
    """A number (not NaN)."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ParameterError(f"{option.flag} must be a number, not {value!r}", option.param) from None
    if x != x:  # NaN
        raise ParameterError(f"{option.flag} must be a number, not {value!r}", option.param)
    return x


def _score(option: SearchOption, value: Any) -> float:
    score = number(option, value)
    if not -1 <= score <= 1:
        raise ParameterError(f"{option.flag} is a cosine similarity between -1 and 1, not {score}", option.param)
    return score


def _km(option: SearchOption, value: Any) -> float:
    km = number(option, value)
    if km <= 0:
        raise ParameterError(f"{option.flag} must be a positive number of km, not {km}", option.param)
    return km


def _threshold(option: SearchOption, value: Any) -> str | float | None:
    from ..search.request import parse_threshold

    try:
        return parse_threshold(value)
    except QueryError as exc:
        raise ParameterError(f"{option.flag}: {exc}", option.param) from None


def _position(option: SearchOption, value: Any) -> tuple[float, float]:
    from ..store.catalog.filters import parse_near

    return parse_near(str(value))


def _filled(option: SearchOption, values: tuple[Any, ...]) -> tuple[str, ...]:
    """Repeated text without the blank ones (an empty form field sends one)."""
    return tuple(str(v) for v in values if str(v).strip())


def _shots(option: SearchOption, values: tuple[Any, ...]) -> list[Any]:
    """Example images: an ``int`` id or a ``Moment`` as is; text as ``--like`` reads it (a file, else
    digits as an id, else ``ID@SECONDS`` as a moment of a video)."""
    from ..search.request import Moment, parse_shot

    shots: list[Any] = []
    for value in values:
        try:
            shot = value if isinstance(value, (int, Moment)) else parse_shot(os.fspath(value))
        except QueryError as exc:
            raise ParameterError(f"{option.flag}: {exc}", option.param) from None
        shots.append(shot if isinstance(shot, (int, Moment)) else os.fspath(shot))
    return shots


# -- the options ------------------------------------------------------------------------------------

_TERM_HELP = ("[WEIGHT:]TEXT or [WEIGHT:]IMAGE-FILE, e.g. 2:sunset or photo.jpg (prefix text: or image: "
              "to force the kind). Repeatable.")

#: Every option of a search, in the order of ``searchindex search --help`` (the CLI puts its own
#: options, such as ``--index`` and ``--json``, between them).
SEARCH_OPTIONS: tuple[SearchOption, ...] = (
    SearchOption("query", "query.text", "Query text (the CLI's QUERY).", api="q"),
    SearchOption("images", "query.images", "Search by example: images similar to this file. Repeatable; combines "
                 "with QUERY.", ("--image",), type=Path, multiple=True,
                 api="image", api_ids=True, api_help="image_id of an example image to search by."),
    SearchOption("plus", "query.plus", "Add a term to the query: " + _TERM_HELP, ("--plus",), multiple=True,
                 metavar="TERM", api="plus"),
    SearchOption("minus", "query.minus", "Subtract a term from the query: " + _TERM_HELP, ("--minus",),
                 multiple=True, metavar="TERM", api="minus"),
    SearchOption("plus_weighted", "query.plus_weighted", "Add TERM with weight W (same as --plus W:TERM). "
                 "Repeatable.", ("--plus-weight",), type=(float, str), multiple=True, metavar="W TERM"),
    SearchOption("minus_weighted", "query.minus_weighted", "Subtract TERM with weight W (same as --minus W:TERM). "
                 "Repeatable.", ("--minus-weight",), type=(float, str), multiple=True, metavar="W TERM"),
    SearchOption("k", "request.k", "Number of results. [default: 10; with --threshold/--min-score: no limit]",
                 ("-k",), type=int, minimum=1, api="k"),
    SearchOption("offset", "page.offset", "Skip this many results first (paging: -k 20 --offset 20 is the second "
                 "page).", ("--offset",), type=int, default=0, minimum=0, show_default=True, api="offset"),
    SearchOption("concept", "concept", "Run a saved concept (its text and liked/unliked examples; saved from "
                 "`searchindex serve`). A QUERY given too replaces its text.", ("--concept",), metavar="NAME",
                 api="concept"),
    SearchOption("threshold", "request.threshold", "'auto': only the results that stand out for this query (see "
                 "docs/queries.md). A number: same as --min-score.", ("--threshold",), metavar="auto|X",
                 check=_threshold, api="threshold"),
    SearchOption("min_score", "request.min_score", "Only results with at least this cosine similarity.",
                 ("--min-score",), type=float, check=_score, api="min_score"),
    SearchOption("paths", "filters.paths", "Only images whose absolute path matches (a folder, or a pattern with "
                 "* ? [...]; * also matches /). Repeatable: any of them.", ("--path",), multiple=True,
                 metavar="GLOB", api="path"),
    SearchOption("exclude", "filters.exclude", "Leave out images whose path matches (as --path). Repeatable.",
                 ("--exclude",), multiple=True, metavar="GLOB", api="exclude"),
    SearchOption("min_width", "filters.min_width", "Only images at least this wide (px).", ("--min-width",),
                 type=int, minimum=1, api="min_width"),
    SearchOption("min_height", "filters.min_height", "Only images at least this tall (px).", ("--min-height",),
                 type=int, minimum=1, api="min_height"),
    SearchOption("after", "filters.after", "Only images taken at or after DATE (YYYY, YYYY-MM, YYYY-MM-DD or "
                 "YYYY-MM-DDTHH:MM, the photo's local time).", ("--after",), metavar="DATE", api="after"),
    SearchOption("before", "filters.before", "Only images taken before DATE (exclusive: --after 2023-06 --before "
                 "2023-07 is June).", ("--before",), metavar="DATE", api="before"),
    SearchOption("cameras", "filters.cameras", "Only images whose camera make and model contain TEXT "
                 "(case-insensitive). Repeatable: any.", ("--camera",), multiple=True, metavar="TEXT",
                 check=_filled, api="camera"),
    SearchOption("ocr_text", "filters.ocr_text", "Only images whose text read by `searchindex ocr` holds every word "
                 "of TEXT.", ("--ocr-text",), metavar="TEXT", api="ocr_text",
                 api_help="The text read in the photo holds these words."),
    SearchOption("near", "filters.near", "Only images taken near this GPS position (decimal degrees), within "
                 "--radius.", ("--near",), metavar="LAT,LON", check=_position, api="near"),
    SearchOption("radius", "filters.radius_km", "Distance for --near in km. [default: 10]", ("--radius",),
                 type=float, metavar="KM", check=_km, needs="near", api="radius"),
    SearchOption("sort", "request.sort", "Order of the results: by score, or by date taken (newest first; same "
                 "results).", ("--sort",), choices=SORT_KEYS, default="score", show_default=True, api="sort"),
    SearchOption("tag", "request.tag", "Only images carrying this zero-shot label (see `searchindex tag`).",
                 ("--tag",), api="tag"),
    SearchOption("persons", "request.persons", "Only images showing this named person (see `searchindex people`). "
                 "Repeatable: all of them.", ("--person",), multiple=True, metavar="NAME", api="person",
                 api_help="A named person in the image (all of them)."),
    SearchOption("like", "request.like", "An example of what you mean (an image file, an image_id from --json "
                 "results, or a moment of a video as ID@SECONDS, e.g. 12@83.5); repeatable.", ("--like",),
                 multiple=True, metavar="PATH|ID|ID@S", check=_shots, api="like", api_ids=True,
                 api_help="image_id of an example of what is meant, or ID@SECONDS: a moment of a video."),
    SearchOption("unlike", "request.unlike", "An example of what you do not mean (as --like); repeatable.",
                 ("--unlike",), multiple=True, metavar="PATH|ID|ID@S", check=_shots, api="unlike", api_ids=True,
                 api_help="image_id of an example of what is not meant, or ID@SECONDS: a moment of a video."),
    SearchOption("pool", "request.pool", "CLIP candidates reranked with --like/--unlike.", ("--pool",), type=int,
                 default=DEFAULT_POOL, minimum=1, show_default=True, api="pool"),
    SearchOption("mode", "request.mode", "vector: CLIP only; text: words only (keywords, descriptions, captions, "
                 "file names); hybrid: both rankings fused; auto: hybrid when some image's words match all the "
                 "query's words.", ("--mode",), choices=SEARCH_MODES, default="auto", show_default=True,
                 api="mode"),
    SearchOption("rerank", "request.rerank", "itm: re-score the top results with BLIP's image-text matching head "
                 "(needs the caption extra).", ("--rerank",), choices=RERANKERS),
    SearchOption("rerank_top", "request.rerank_top", "How many of the top results --rerank re-scores.",
                 ("--rerank-top",), type=int, default=DEFAULT_RERANK_TOP, minimum=1, show_default=True),
    SearchOption("rerank_model", "request.rerank_model", "ITM model for --rerank itm: a hub id or local folder. "
                 f"[default: {DEFAULT_ITM_MODEL}]", ("--rerank-model",), metavar="MODEL"),
)
