"""Result presentation: ranked ids become :class:`~searchindex.results.SearchResult` rows, in the order asked for."""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from collections.abc import Sequence

import numpy as np

from ..cjk import is_cjk
from ..defaults import MAX_KEYWORDS
from ..errors import NotFoundError
from ..results import SearchResult, TextLine
from ..store.catalog.database import Catalog
from ..store.catalog.records import ImageDetails
from ..store.vector_store import VectorStore
from .hybrid import TextRanking

__all__ = ["build_results", "image_details", "keywords", "matched_lines", "sort_results"]

# Keyword-list sources whose text is "a, b, c": shown as separate keywords.
_LIST_SOURCES = frozenset({"xmp:subject", "iptc:keywords"})


def sort_results(results: list[SearchResult], sort: str) -> list[SearchResult]:
    """``results`` in the requested order; ``rank`` stays the rank by score."""
    if sort != "date":
        return results
    # Local wall-clock ISO text sorts chronologically; Python's sort is stable, so
    # equal dates stay in score order.
    dated = sorted((r for r in results if r.taken_at), key=lambda r: r.taken_at or "", reverse=True)
    return dated + [r for r in results if not r.taken_at]


def keywords(texts: Sequence[tuple[str, str]] | None) -> tuple[str, ...]:
    """The words people wrote, as shown with a result: each keyword, each description, once,
    at most :data:`~searchindex.defaults.MAX_KEYWORDS` of them.

    Linear in the stored text and bounded in what it returns: an index built before
    keywords were capped at index time may hold 100,000 for one image.
    """
    out: list[str] = []
    seen: set[str] = set()
    for source, text in texts or ():
        parts = text.split(", ") if source in _LIST_SOURCES else text.splitlines()
        for part in parts:
            part = part.strip()
            folded = part.casefold()
            if part and folded not in seen:
                seen.add(folded)
                out.append(part)
                if len(out) == MAX_KEYWORDS:
                    return tuple(out)
    return tuple(out)


def matched_lines(lines: Sequence[TextLine], words: Sequence[str]) -> tuple[str, ...]:
    """The lines (read in a photo) that hold one of ``words``: a Latin word as a whole word, a
    Korean or other CJK word anywhere in a run (as the word index matches them)."""
    if not words:
        return ()
    patterns = [re.compile(re.escape(w.casefold()) if is_cjk(w) else rf"(?<![^\W_]){re.escape(w.casefold())}(?![^\W_])")
                for w in words]
    out = []
    for line in lines:
        folded = unicodedata.normalize("NFC", line.text).casefold()
        if any(p.search(folded) for p in patterns):
            out.append(line.text)
    return tuple(out)


def build_results(catalog: Catalog, vectors: VectorStore, ids: np.ndarray, scores: np.ndarray, *,
                  text: TextRanking | None = None, vector: np.ndarray | None = None,
                  words: Sequence[str] = ()) -> list[SearchResult]:
    """Catalog rows, tags, captions and keywords of ranked ids, as results.

    ``text``: the word ranking (fills ``text_score``); ``vector``: the query
    vector when ``score`` is not the cosine (fills ``vector_score``); ``words``: the
    query's words (fills ``ocr_text`` with the lines read in the photo that hold them).
    """
    id_list = [int(i) for i in ids]
    rows = catalog.read.records(id_list)
    tags = catalog.read.tags(id_list)
    captions = catalog.read.captions(id_list)
    texts = catalog.read.texts(id_list)
    persons = catalog.read.person_names(id_list)
    ocr = catalog.read.ocr_lines(id_list) if words else {}
    bm25 = dict(zip(text.ids.tolist(), text.scores.tolist(), strict=True)) if text is not None else {}
    cosines = dict(zip(id_list, vectors.cosines(vector, ids).tolist(), strict=True)) if vector is not None else {}
    out: list[SearchResult] = []
    for score, image_id in zip(np.asarray(scores).tolist(), id_list, strict=True):
        row = rows.get(image_id)
        if row is None:  # removed by a concurrent writer since the vectors were read
            continue
        if text is not None and vector is None:  # text mode: no CLIP score
            vector_score = None
        else:
            vector_score = cosines.get(image_id, score)
        first_caption = captions[image_id][0][1] if captions.get(image_id) else None
        out.append(SearchResult(
            len(out) + 1, score, row.path, row.id, row.width, row.height, row.format, row.size, row.sha256,
            row.taken_at, row.taken_offset, row.date_source, row.camera_make, row.camera_model, row.lens,
            row.gps_lat, row.gps_lon, tuple(name for name, _ in tags.get(image_id, ())),
            caption=first_caption, keywords=keywords(texts.get(image_id)),
            vector_score=vector_score, text_score=bm25.get(image_id), persons=tuple(persons.get(image_id, ())),
            ocr_text=matched_lines(ocr.get(image_id, ()), words),
        ))
    return out


def image_details(catalog: Catalog, image_id: int) -> ImageDetails:
    """One image's catalog row with its tags, captions and keywords.

    Raises:
        NotFoundError: no image with this id (never indexed, or removed since).
    """
    if isinstance(image_id, bool) or not isinstance(image_id, (int, np.integer)):
        raise NotFoundError(f"an image id is a whole number, not {image_id!r}")
    image_id = int(image_id)
    # SQLite integers are 64-bit: a larger id names no image (and would overflow the query).
    row = catalog.read.records([image_id]).get(image_id) if 0 <= image_id <= 2**63 - 1 else None
    if row is None:
        raise NotFoundError(f"no image with id {image_id} in this index")
    captions = catalog.read.captions([image_id]).get(image_id, [])
    return ImageDetails(
        **dataclasses.asdict(row),
        tags=tuple(name for name, _ in catalog.read.tags([image_id]).get(image_id, ())),
        caption=captions[0][1] if captions else None, captions=dict(captions),
        keywords=keywords(catalog.read.texts([image_id]).get(image_id)),
        text_lines=tuple(catalog.read.ocr_lines([image_id]).get(image_id, ())),
    )
