"""The searcher: a query and a :class:`~searchindex.search.request.SearchRequest` in, ranked results out.

It combines the two rankings an index can give: the CLIP ranking from the
vector store (exact under filters, few-shot reranked, or cut where the scores
stop standing out) and the word ranking from the catalog's full-text index
(BM25 over keywords, descriptions, captions and file names), fused in hybrid mode.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import QueryError
from ..models.session import ModelSession
from ..results import SearchResult
from ..store.catalog.database import Catalog
from ..store.vector_store import VectorStore
from ..store.vectors.index import VectorIndex
from .cutoff import auto_cutoff
from .hybrid import TextRanking, fuse, query_words, rank_text
from .moments import FrameRanking, VideoHit, attach_moments, merge_videos
from .present import build_results, sort_results
from .query import Query, Term, combine
from .request import SearchRequest, Shot
from .rerank import rerank_itm
from .shots import shot_vectors, unchanged_ids

__all__ = ["AUTO_BACKGROUND", "AUTO_MAX_POOL", "AUTO_POOL", "FUSION_DEPTH", "TEXT_DEPTH", "Searcher"]

log = logging.getLogger(__name__)

#: Hybrid search fuses at least this many CLIP results with the word matches.
FUSION_DEPTH = 100
#: The most images one query word may match in the word ranking.
TEXT_DEPTH = 1000
#: --threshold auto looks for a break among this many top scores first (then 4x more, up to AUTO_MAX_POOL).
AUTO_POOL = 1024
AUTO_MAX_POOL = 65536
#: Random images whose scores form the background distribution of --threshold auto's fallback.
AUTO_BACKGROUND = 2000


class Searcher:
    """Searches one index: its catalog, its vector store and its models."""

    def __init__(self, catalog: Catalog, vectors: VectorStore, models: ModelSession) -> None:
        self.catalog = catalog
        self.vectors = vectors
        self.models = models
        self.frames = FrameRanking(catalog.read, models.dim)

    def embed(self, query: str | Term | Query | Sequence[Term]) -> np.ndarray:
        """The unit-length query vector of a text, term, query or list of terms.

        An image term naming an indexed file uses its stored embedding (as like/unlike
        examples do): "more like this" on a result needs neither decoding nor the image model.
        A file changed since it was indexed (another size or mtime) is encoded afresh.
        """
        q = Query.coerce(query)
        texts = [t.text for t in q.terms if t.text is not None]
        text_vecs = iter(self.models.encode_texts(texts)) if texts else iter(())
        key = {t.image: os.fspath(Path(t.image).expanduser().absolute()) for t in q.terms if t.image is not None}
        by_path = unchanged_ids(self.catalog, list(key.values()))
        stored = self.catalog.read.embeddings(list(by_path.values()), self.models.dim) if by_path else {}
        vectors = []
        for term in q.terms:
            if term.text is not None:
                vectors.append(next(text_vecs))
                continue
            assert term.image is not None
            image_id = by_path.get(key[term.image])
            if image_id is not None and image_id in stored:
                vectors.append(stored[image_id])
            else:
                vectors.append(self.models.encode_image_file(term.image, "query image"))
        return combine(np.stack(vectors), [t.weight for t in q.terms])

    def search(self, query: str | Term | Query | Sequence[Term], request: SearchRequest) -> list[SearchResult]:
        """The images that best match ``query``, best first (see :meth:`searchindex.Index.search`)."""
        q = Query.coerce(query)
        r = request
        positive = " ".join(t.text for t in q.terms if t.text is not None and t.weight > 0)
        words = query_words(positive) if positive else []
        if r.rerank == "itm" and not positive:
            raise QueryError("--rerank itm judges an image against words: the query needs a text term")
        if r.mode in ("text", "hybrid") and not words:
            raise QueryError(f"--mode {r.mode} needs words to search for: give a text query (or use --mode vector)")
        limit = k = r.k
        if r.rerank is not None and k is not None:
            k = max(k, r.rerank_top)  # the reranker sees its whole shortlist; the answer is cut to ``limit`` after
        candidates = self._candidates(r)
        text = TextRanking.empty()
        if r.mode != "vector" and words and (candidates is None or len(candidates)):
            text = self._text_ranking(q, words, candidates)
        mode = r.mode
        if mode == "auto":
            mode = "hybrid" if len(text.full()) else "vector"
        if mode == "text":
            ids, scores = text.ids, text.scores
            if k is not None:
                ids, scores = ids[:k], scores[:k]
            results = build_results(self.catalog, self.vectors, ids, scores, text=text, words=words)
            results = attach_moments(results, {}, self.catalog.read)  # a video's duration; no moment matched words
        else:
            vector = self.embed(q)
            depth = max(k, FUSION_DEPTH) if mode == "hybrid" and k is not None else k
            scores, ids, shot_ids = self._vector_ranking(vector, depth, candidates, r)
            scores, ids, hits = self._with_videos(vector, scores, ids, depth, candidates, r, shot_ids)
            if mode == "hybrid":
                full = text.full().without(shot_ids)
                ids, scores = fuse(r.fusion, ids, scores, full, lambda i: self.vectors.cosines(vector, i))
                text = full
            if k is not None:
                scores, ids = scores[:k], ids[:k]
            # Fused or few-shot scores are not cosines: vector_score keeps the CLIP similarity itself.
            not_cosine = mode == "hybrid" or bool(r.like or r.unlike)
            results = build_results(self.catalog, self.vectors, ids, scores, text=text if mode == "hybrid" else None,
                                    vector=vector if not_cosine else None, words=words)
            results = attach_moments(results, hits, self.catalog.read)
        if r.rerank == "itm":
            results = rerank_itm(self.models, results, positive, r.rerank_top, r.rerank_model)
        return sort_results(results[:limit] if limit is not None else results, r.sort)

    def search_vector(self, vector: np.ndarray, request: SearchRequest) -> list[SearchResult]:
        """The images nearest to an embedding (see :meth:`searchindex.Index.search_vector`)."""
        if request.rerank is not None:
            raise QueryError("rerank judges images against words: use search() with a text query")
        try:
            wide = np.asarray(vector, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise QueryError(f"a query vector is an array of numbers, not {type(vector).__name__}") from None
        if wide.shape[0] != self.models.dim:
            raise QueryError(f"query vector has {wide.shape[0]} dimensions, the index {self.models.dim}")
        if not np.isfinite(wide).all():
            raise QueryError("the query vector holds NaN or infinite values")
        norm = float(np.linalg.norm(wide))
        if not norm > 1e-6:
            raise QueryError("the query vector is all zeros: it has no direction to search in")
        # Scores are cosines: the index holds unit vectors, so the query is made one too.
        vector = (wide / norm).astype(np.float32)
        candidates = self._candidates(request)
        scores, ids, shots = self._vector_ranking(vector, request.k, candidates, request)
        scores, ids, hits = self._with_videos(vector, scores, ids, request.k, candidates, request, shots)
        if request.k is not None:
            scores, ids = scores[: request.k], ids[: request.k]
        results = attach_moments(build_results(self.catalog, self.vectors, ids, scores,
                                             vector=vector if request.like or request.unlike else None),
                                 hits, self.catalog.read)
        return sort_results(results, request.sort)

    def _with_videos(self, vector: np.ndarray, scores: np.ndarray, ids: np.ndarray, k: int | None,
                     candidates: np.ndarray | None, r: SearchRequest,
                     shot_ids: list[int]) -> tuple[np.ndarray, np.ndarray, dict[int, VideoHit]]:
        """The CLIP ranking with videos scored by their best frames (see :mod:`.moments`).

        A few-shot rerank and ``--threshold auto`` judge the videos by their rows (the mean of
        their frames) and get their moments attached only.
        """
        hits = self.frames.hits(vector, candidates)
        if not hits or shot_ids or r.like or r.unlike or r.threshold == "auto":
            return scores, ids, hits
        scores, ids = merge_videos(scores, ids, hits, k, r.min_score)
        return scores, ids, hits

    def _candidates(self, r: SearchRequest) -> np.ndarray | None:
        """The sorted ids meeting the request's filters and tag; ``None`` when nothing restricts the search."""
        candidates = None
        if r.tag is not None:
            known = [name for name, _ in self.catalog.read.tag_counts()]
            if r.tag not in known:
                listing = ", ".join(known) if known else "none yet"
                raise QueryError(f"unknown tag {r.tag!r} (labels in this index: {listing}); "
                                 "add labels with `searchindex tag --labels ...`")
            candidates = np.sort(np.asarray(self.catalog.read.ids_tagged(r.tag), dtype=np.int64))
        for person in r.persons:  # every named person must be in the image
            with_person = self.catalog.read.ids_with_person(person)
            if with_person is None:
                raise QueryError(f"no person named {person!r} in this index (name one with "
                                 "`searchindex people name ID NAME`)")
            candidates = with_person if candidates is None else np.intersect1d(candidates, with_person)
        if r.filters is not None and r.filters.active:
            matching = self.catalog.read.filtered_ids(r.filters)
            candidates = matching if candidates is None else np.intersect1d(candidates, matching)
        return candidates

    def _vector_ranking(self, vector: np.ndarray, k: int | None, candidates: np.ndarray | None,
                        r: SearchRequest) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """(scores, ids, example ids) of the CLIP ranking, best first: top ``k``, a cutoff's set, or few-shot
        reranked (the indexed examples left out)."""
        like_vecs, like_ids = self._shots(r.like, "like")
        unlike_vecs, unlike_ids = self._shots(r.unlike, "unlike")
        vecs = self.vectors.current()
        searched = vecs.ntotal if candidates is None else len(candidates)
        shot_ids = set(like_ids) | set(unlike_ids)
        if searched == 0 or vecs.ntotal == 0:
            return np.zeros(0, np.float32), np.zeros(0, np.int64), sorted(shot_ids)
        if len(like_vecs) or len(unlike_vecs):
            from .fewshot import FewShotReranker

            base, cand_ids = vecs.top_k(vector, max(r.pool, (k or 0) + len(shot_ids)), candidates)
            exclude = np.isin(cand_ids, list(shot_ids))
            new, fit = FewShotReranker().fit_scores(vector, vecs.vectors(cand_ids), like_vecs,
                                                    unlike_vecs, base_scores=base, exclude=exclude)
            log.info("few-shot rerank of %d candidates: %s", len(cand_ids), fit)
            order = np.array([i for i in np.argsort(-new, kind="stable") if not exclude[i]], dtype=np.int64)
            return new[order].astype(np.float32), cand_ids[order], sorted(shot_ids)
        if r.threshold == "auto":
            scores, ids = self._auto_cut(vecs, vector, candidates, searched)
            if r.min_score is not None:
                keep = scores >= r.min_score
                scores, ids = scores[keep], ids[keep]
        elif r.min_score is not None:
            scores, ids = vecs.scores_above(vector, r.min_score, candidates)
        else:
            scores, ids = vecs.top_k(vector, k if k is not None else searched, candidates)
        return scores, ids, []

    def _shots(self, shots: Sequence[Shot], what: str) -> tuple[np.ndarray, list[int]]:
        return shot_vectors(self.catalog, self.models, shots, what)

    def _text_ranking(self, q: Query, words: Sequence[str], candidates: np.ndarray | None) -> TextRanking:
        """The word ranking of ``words`` among ``candidates``, minus images matching a negative text term.

        A word found in more than half of the searched images is left out (see
        :func:`searchindex.search.hybrid.rank_text`); so is the ranking when no word is left.
        """
        # The vector count stands for the image count: a COUNT(*) costs 50 ms per query at 1M rows.
        searched = self.vectors.current().ntotal if candidates is None else len(candidates)
        common = searched // 2
        # Enough hits to tell a common word, and at least TEXT_DEPTH of the others.
        limit = max(TEXT_DEPTH, common + 1)

        def search_word(word: str) -> list[tuple[int, float]]:
            return self.catalog.read.text_search(word, limit, candidates)

        ranking = rank_text(words, search_word, max_hits=common if searched >= 2 else None)
        for term in q.terms:
            if term.text is not None and term.weight < 0 and len(ranking):
                unwanted = rank_text(query_words(term.text), search_word).full()
                ranking = ranking.without(unwanted.ids)
        return ranking

    def _auto_cut(
        self, vecs: VectorIndex, vector: np.ndarray, candidates: np.ndarray | None, searched: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The top results that stand out (see :func:`searchindex.search.cutoff.auto_cutoff`)."""
        pool = min(searched, AUTO_POOL)
        rng = np.random.default_rng(0)  # same background sample for the same index: stable answers
        universe = vecs.ids() if candidates is None else candidates[vecs.contains(candidates)]
        sample = universe if len(universe) <= AUTO_BACKGROUND else rng.choice(universe, AUTO_BACKGROUND, replace=False)
        background = vecs.vectors(np.sort(sample)) @ vector
        while True:
            scores, ids = vecs.top_k(vector, pool, candidates)
            exhaustive = len(scores) < pool or pool >= searched
            cut = auto_cutoff(scores, background, exhaustive=exhaustive)
            # A cut in the lower half of the pool may belong further down: look at more.
            if exhaustive or cut <= pool // 2 or pool >= AUTO_MAX_POOL:
                break
            pool = min(pool * 4, searched, AUTO_MAX_POOL)
        log.debug("auto cutoff: %d of the top %d (of %d searched)", cut, len(scores), searched)
        return scores[:cut], ids[:cut]
