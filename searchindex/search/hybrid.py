"""Hybrid search: the CLIP ranking and the word ranking (BM25 over keywords, captions, names) fused.

Plain NumPy and text: the catalog answers the word queries, :class:`searchindex.Index`
the vector ones; this module decides which words are searched, how per-word BM25
answers become one text ranking, and how the two rankings are fused.

Words.  A query is split into words the way SQLite's ``unicode61`` tokenizer does
(letters and digits, case-folded, diacritics removed by FTS5 itself), and words
that carry no subject (``a``, ``of``, ``photo``...) are dropped: "a photo of
grandma" searches for "grandma".  Each remaining word is searched on its own;
since BM25 is a sum over query terms, the per-word scores add up to the
multi-word score, and counting the words each image matched gives its coverage.

Which text hits count.  An image whose words cover the whole query ("Red Cross
fundraiser" for the query "red cross") is strong evidence.  One that matches
part of it ("red" for "a red star") is not: in a collection where a group of
photos is tagged "Red Cross fundraiser", letting such partial matches into the
fusion drags unrelated photos into every query that mentions red.  So hybrid
search fuses only full matches, and text-only search lists full matches first,
then partial ones.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..defaults import FUSIONS

__all__ = [
    "DEFAULT_FUSION",
    "RRF_K",
    "STOPWORDS",
    "TextRanking",
    "fuse",
    "query_words",
    "rank_text",
]

#: Words that say nothing about what is in a photo (English function words and the
#: "a photo of" vocabulary of CLIP prompts); dropped from word search unless nothing else is left.
STOPWORDS = frozenset("""
a an the of in on at to for with and or by from into onto over under near
is are was were be been being this that these those it its some any
photo photos photograph picture pictures pic image images shot
""".split())

#: The rank offset of reciprocal rank fusion (Cormack et al. 2009 use 60).
RRF_K = 60

_WORD = re.compile(r"[^\W_]+")


def query_words(text: str) -> list[str]:
    """The words of ``text`` to search for: case-folded, unique, stopwords dropped (unless all are)."""
    words = list(dict.fromkeys(w.casefold() for w in _WORD.findall(unicodedata.normalize("NFC", text))))
    kept = [w for w in words if w not in STOPWORDS]
    return kept or words


@dataclass(frozen=True)
class TextRanking:
    """Images matching the query's words, best first.

    ``coverage`` is the fraction of the query's words each image matched (1.0 =
    all); ``scores`` the summed BM25 (higher is better).  Full matches come first.
    """

    ids: np.ndarray
    scores: np.ndarray
    coverage: np.ndarray

    @classmethod
    def empty(cls) -> TextRanking:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.float32))

    def full(self) -> TextRanking:
        """Only the images that matched every word."""
        keep = self.coverage >= 1.0
        return TextRanking(self.ids[keep], self.scores[keep], self.coverage[keep])

    def without(self, ids: np.ndarray | Sequence[int]) -> TextRanking:
        keep = ~np.isin(self.ids, np.asarray(list(ids), dtype=np.int64))
        return TextRanking(self.ids[keep], self.scores[keep], self.coverage[keep])

    def __len__(self) -> int:
        return len(self.ids)


def rank_text(words: Sequence[str], search_word: Callable[[str], list[tuple[int, float]]],
              max_hits: int | None = None) -> TextRanking:
    """Combine per-word BM25 answers into one ranking (see the module docstring).

    Args:
        search_word: one word -> [(image id, BM25 score, higher better)].
        max_hits: a word matching more images than this is left out: one found in
            most of the collection (every file is "IMG_...") says nothing about
            any image (BM25's inverse document frequency is not positive for it).
    """
    answers = [search_word(word) for word in words]
    answers = [a for a in answers if max_hits is None or len(a) <= max_hits]
    if not answers:
        return TextRanking.empty()
    total: dict[int, float] = {}
    matched: dict[int, int] = {}
    for answer in answers:
        for image_id, score in answer:
            total[image_id] = total.get(image_id, 0.0) + float(score)
            matched[image_id] = matched.get(image_id, 0) + 1
    if not total:
        return TextRanking.empty()
    ids = np.fromiter(total, dtype=np.int64, count=len(total))
    scores = np.fromiter(total.values(), dtype=np.float64, count=len(total))
    coverage = np.fromiter((matched[i] for i in total), dtype=np.float64, count=len(total)) / len(answers)
    order = np.lexsort((ids, -scores, -coverage))  # coverage, then BM25, then id for stable ties
    return TextRanking(ids[order], scores[order].astype(np.float32), coverage[order].astype(np.float32))


# -- fusion -------------------------------------------------------------------------


def _rrf(vector_ids: np.ndarray, vector_scores: np.ndarray, text: TextRanking, text_weight: float) -> dict[int, float]:
    fused: dict[int, float] = {}
    for rank, image_id in enumerate(vector_ids.tolist(), 1):
        fused[image_id] = 1.0 / (RRF_K + rank)
    for rank, image_id in enumerate(text.ids.tolist(), 1):
        fused[image_id] = fused.get(image_id, 0.0) + text_weight / (RRF_K + rank)
    return fused


def _blend(vector_ids: np.ndarray, vector_scores: np.ndarray, text: TextRanking, weight: float,
           cosine: Callable[[np.ndarray], np.ndarray]) -> dict[int, float]:
    """Cosine similarity plus ``weight`` x BM25 normalised by the query's best BM25 (0 without a match).

    Every image of either list gets its true cosine (text hits outside the vector
    list are scored with ``cosine``), so the blend compares like with like.
    """
    ids = np.union1d(vector_ids, text.ids).astype(np.int64)
    cos = cosine(ids)
    bm25 = np.zeros(len(ids))
    if len(text):
        pos = np.searchsorted(ids, text.ids)
        bm25[pos] = text.scores / max(float(text.scores.max()), 1e-9)
    return dict(zip(ids.tolist(), (cos + weight * bm25).tolist(), strict=True))


# Fusion methods (FUSIONS, in searchindex.defaults: name -> (kind, parameter)).  ``rrf``: reciprocal
# rank fusion with equal weights; ``wrrf``: text ranks count twice; ``blend``: cosine + 0.5 x normalised BM25.

# Chosen by scripts/eval_hybrid.py (tiny-shapes, 1,000 held-out images, seed 2026; 10 groups
# of 10 images with keywords no pixel shows; docs/hybrid.md, "Fusion"):
#
#   fusion   keyword recall@10 (worst group)   colour-shape P@10 with keywords / without
#   vector   0.000 (0.000)                     1.000 / 1.000
#   rrf      0.520 (0.500)                     0.988 / 1.000
#   wrrf     1.000 (1.000)                     0.975 / 1.000
#   blend    0.900 (0.000)                     0.993 / 1.000
#
# Equal-weight RRF interleaves the lists, so a group of 10 gets half the top 10; the
# blend misses one whole group (CLIP's best cosines outweigh a word match).  wrrf is
# the only one meeting both goals (recall >= 0.9, precision within 0.05 of CLIP): its
# one loss is "a photo of a red star" turning to the "Red Star Brewery tour" photos.
DEFAULT_FUSION = "wrrf"


def fuse(
    method: str,
    vector_ids: np.ndarray,
    vector_scores: np.ndarray,
    text: TextRanking,
    cosine: Callable[[np.ndarray], np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """(ids, fused scores), best first, of the vector ranking and the text ranking.

    Args:
        method: a key of :data:`FUSIONS`.
        vector_ids, vector_scores: the CLIP ranking (best first) and its cosines.
        text: the full-match text ranking.
        cosine: ids -> their cosine similarity to the query (for ``blend``).
    """
    kind, param = FUSIONS[method]
    if kind == "rrf":
        fused = _rrf(vector_ids, vector_scores, text, param)
    else:
        fused = _blend(vector_ids, vector_scores, text, param, cosine)
    if not fused:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    ids = np.fromiter(fused, dtype=np.int64, count=len(fused))
    scores = np.fromiter(fused.values(), dtype=np.float64, count=len(fused))
    order = np.lexsort((ids, -scores))
    return ids[order], scores[order].astype(np.float32)
