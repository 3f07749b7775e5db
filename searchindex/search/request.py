"""How to search: every option of a search as one validated value.

:class:`SearchRequest` replaces the fifteen keyword options that
:meth:`searchindex.Index.search` and :meth:`~searchindex.Index.search_vector`
used to repeat: both still accept the keywords (and build a request from them),
and both accept a ready request (``index.search("red car", request=req)``).
:meth:`SearchRequest.from_options` holds the decisions a front end (the CLI, a
web form) would otherwise make itself: ``--threshold`` as a number or ``auto``,
and "no ``k`` given" meaning 10, or no limit with a score cutoff.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass
from typing import Any, Union

import numpy as np

from ..defaults import DEFAULT_K, DEFAULT_POOL, DEFAULT_RERANK_TOP, FUSIONS, RERANKERS, SEARCH_MODES, SORT_KEYS
from ..errors import ParameterError, QueryError
from ..store.catalog.filters import Filters
from ..textcheck import checked_text
from .hybrid import DEFAULT_FUSION

__all__ = ["Moment", "SearchRequest", "Shot", "parse_moment", "parse_shot", "parse_threshold"]


@dataclass(frozen=True)
class Moment:
    """A moment of an indexed video as an example (``ID@SECONDS``): the video's image id and a
    second in it; the video's kept frame nearest to that second stands for it."""

    image_id: int
    time: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.time) and self.time >= 0):
            raise QueryError(f"a moment is a second from the start of the video, not {self.time!r}")

    def __str__(self) -> str:
        return f"{self.image_id}@{self.time:g}"


# An example image for few-shot search: a path, the id of an indexed image, or a moment of a video.
Shot = Union[str, "os.PathLike[str]", int, Moment]  # noqa: UP007 (a runtime alias; X | Y needs 3.10 types)

_MOMENT = re.compile(r"(\d+)@(\d+(?:\.\d*)?|\.\d+)")


def parse_threshold(value: str | float | None) -> str | float | None:
    """``--threshold``: ``"auto"``, a number (a cosine floor, as ``min_score``), or ``None``.

    Raises:
        QueryError: neither ``auto`` nor a number, or a number outside -1..1.
    """
    if value is None or value == "auto":
        return value
    try:
        number = float(value)
    except ValueError:
        raise QueryError(f"{value!r} is neither 'auto' nor a number") from None
    if not -1 <= number <= 1:
        raise QueryError("a score threshold is between -1 and 1")
    return number


def parse_shot(value: str) -> Shot:
    """A ``--like``/``--unlike`` value: an existing file, else an image id (digits), else a moment of a
    video (``ID@SECONDS``, e.g. ``12@83.5``), else a path to report."""
    if os.path.exists(value):
        return value
    if value.isdigit():
        return int(value)
    moment = parse_moment(value)
    return value if moment is None else moment


def parse_moment(value: str) -> Moment | None:
    """``ID@SECONDS`` (``12@83.5``) as a :class:`Moment`; ``None`` when the text is not of that form."""
    found = _MOMENT.fullmatch(value.strip())
    return None if found is None else Moment(int(found.group(1)), float(found.group(2)))


@dataclass(frozen=True)
class SearchRequest:
    """The options of one search (see :meth:`searchindex.Index.search` for what each does).

    Construction validates everything that does not depend on the query or the
    index, so a bad option is a :class:`~searchindex.errors.QueryError` before
    any model loads.
    """

    k: int | None = DEFAULT_K  # None: no limit (with a cutoff)
    filters: Filters | None = None
    min_score: float | None = None
    threshold: str | None = None  # "auto" or None
    sort: str = "score"
    tag: str | None = None
    persons: tuple[str, ...] = ()  # named persons who must all be in the image (searchindex[faces])
    like: tuple[Shot, ...] = ()
    unlike: tuple[Shot, ...] = ()
    pool: int = DEFAULT_POOL
    mode: str = "auto"
    rerank: str | None = None
    rerank_top: int = DEFAULT_RERANK_TOP
    rerank_model: str | None = None
    fusion: str = DEFAULT_FUSION

    def __post_init__(self) -> None:
        for name in ("like", "unlike"):
            shots = getattr(self, name)
            if isinstance(shots, (str, int, os.PathLike, Moment)):
                shots = (shots,)
            try:
                shots = tuple(shots)
            except TypeError:
                raise QueryError(f"{name} takes image paths or ids, not {type(shots).__name__}") from None
            for shot in shots:
                if isinstance(shot, bool) or not isinstance(shot, (str, int, np.integer, os.PathLike, Moment)):
                    raise QueryError(f"a {name} example is an image path, an id or a moment, not {shot!r}")
            object.__setattr__(self, name, shots)
        for name in ("k", "pool", "rerank_top"):
            value = getattr(self, name)
            # 1.5 or True is no count of results; numpy integers are (a slice of an array's length).
            if not (value is None and name == "k") and (
                    isinstance(value, bool) or not isinstance(value, (int, np.integer))):
                raise ParameterError(f"{name} must be a whole number, not {value!r}", name)
            if value is not None:
                object.__setattr__(self, name, int(value))
        for name in ("k", "pool", "rerank_top"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ParameterError(f"{name} must be at least 1", name)
        if self.min_score is not None and (isinstance(self.min_score, bool)
                                           or not isinstance(self.min_score, (int, float, np.floating))
                                           or not math.isfinite(self.min_score)):
            raise ParameterError(f"min_score must be a number, not {self.min_score!r}", "min_score")
        if self.min_score is not None:
            object.__setattr__(self, "min_score", float(self.min_score))
        if self.filters is not None and not isinstance(self.filters, Filters):
            raise ParameterError(f"filters must be a Filters, not {type(self.filters).__name__}", "filters")
        persons = (self.persons,) if isinstance(self.persons, str) else tuple(self.persons)
        for person in persons:
            if not isinstance(person, str) or not person.strip():
                raise ParameterError(f"a person is a name, not {person!r}", "person")
        object.__setattr__(self, "persons", persons)
        for name in ("tag", "rerank_model"):
            if getattr(self, name) is not None:
                checked_text(getattr(self, name), name)
        if self.threshold not in (None, "auto"):
            raise QueryError(f"threshold must be 'auto' or None, not {self.threshold!r} (use min_score for a number)")
        if self.sort not in SORT_KEYS:
            raise QueryError(f"sort must be one of {', '.join(SORT_KEYS)}, not {self.sort!r}")
        if self.min_score is not None and not -1.0 <= self.min_score <= 1.0:
            raise QueryError(f"min_score is a cosine similarity between -1 and 1, not {self.min_score}")
        if (self.like or self.unlike) and self.has_cutoff:
            raise QueryError("a score cutoff (--threshold/--min-score) cannot be combined with --like/--unlike yet")
        if self.mode not in SEARCH_MODES:
            raise QueryError(f"mode must be one of {', '.join(SEARCH_MODES)}, not {self.mode!r}")
        if self.fusion not in FUSIONS:
            raise QueryError(f"fusion must be one of {', '.join(FUSIONS)}, not {self.fusion!r}")
        if self.rerank is not None and self.rerank not in RERANKERS:
            raise QueryError(f"rerank must be one of {', '.join(RERANKERS)} or None, not {self.rerank!r}")
        if self.mode == "text":
            if self.like or self.unlike:
                raise QueryError("--like/--unlike rerank by pictures: use them with --mode vector or hybrid")
            if self.has_cutoff:
                raise QueryError("--min-score/--threshold cut CLIP scores: use them with --mode vector or hybrid")

    @property
    def has_cutoff(self) -> bool:
        """Whether a score cutoff (``min_score`` or ``threshold``) decides how many results come back."""
        return self.min_score is not None or self.threshold is not None

    @classmethod
    def from_options(cls, *, k: int | None = None, threshold: str | float | None = None,
                     min_score: float | None = None, **options: Any) -> SearchRequest:
        """A request from a front end's options, deciding what they leave open.

        Args:
            k: the most results; ``None`` (not given): :data:`DEFAULT_K`, or no
                limit when a score cutoff decides.
            threshold: ``"auto"``, or a number (or its text): a floor like
                ``min_score`` (with both, the higher one counts).
            options: the other fields of :class:`SearchRequest`.

        Raises:
            QueryError: bad values.
        """
        cut = parse_threshold(threshold)
        if isinstance(cut, float):
            min_score = cut if min_score is None else max(min_score, cut)
            cut = None
        if k is None and cut is None and min_score is None:
            k = DEFAULT_K
        return cls(k=k, threshold=cut, min_score=min_score, **options)

    def replace(self, **changes: Any) -> SearchRequest:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def of(cls, request: SearchRequest | None, k: int | None, options: dict[str, Any]) -> SearchRequest:
        """``request``, or one built from ``k`` and keyword options (what ``Index.search`` receives).

        Raises:
            QueryError: a request and options that differ from their defaults (or ``k`` other than
                :data:`DEFAULT_K`), both given; bad values.
        """
        if request is None:
            return cls(k=k, **options)
        if not isinstance(request, SearchRequest):
            raise ParameterError(f"request must be a SearchRequest, not {request!r}", "request")
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        given = [name for name, value in options.items()
                 if not (value == defaults[name] or (name in ("like", "unlike", "persons") and not value))]
        if given or k != DEFAULT_K:
            raise QueryError("give either a SearchRequest or keyword options, not both")
        return request
