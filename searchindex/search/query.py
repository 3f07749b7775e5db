"""Queries as data: weighted terms of text and images.

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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import QueryError
from ..textcheck import checked_text

__all__ = [
    "Query",
    "Term",
    "combine",
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
        if self.text is not None and not checked_text(self.text, "a query text").strip():
            raise QueryError("a text term is empty")
        if self.image is not None and not isinstance(self.image, str):
            raise QueryError(f"an image term's path must be a str, not {type(self.image).__name__}")
        if isinstance(self.weight, bool) or not isinstance(self.weight, (int, float)):
            raise QueryError(f"a term's weight must be a number, not {type(self.weight).__name__}")
        if not math.isfinite(self.weight) or self.weight == 0:
            raise QueryError(f"a term's weight must be a non-zero number, not {self.weight}")

    @classmethod
    def of_text(cls, text: str, weight: float = 1.0) -> Term:
        return cls(text=text.strip(), weight=weight)

    @classmethod
    def of_image(cls, path: str | os.PathLike[str], weight: float = 1.0) -> Term:
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if not isinstance(path, (str, os.PathLike)):
            raise QueryError(f"an image term is a path (str or os.PathLike), not {type(path).__name__}")
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
        from ..fileio import describe_type

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
            if not checked_text(query, "the query").strip():
                raise QueryError("the query text is empty")
            return cls((Term.of_text(query),))
        if not isinstance(query, (list, tuple)):  # None, a number, bytes, a path, ...
            raise QueryError(f"a query is a text, a Term, a Query, or a sequence of Terms, not {type(query).__name__}")
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
    return np.asarray(total / norm, dtype=np.float32)
