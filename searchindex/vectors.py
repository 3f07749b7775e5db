"""The vector index: FAISS over L2-normalised vectors, a cache of the catalog.

Each saved file carries in its name the catalog generation it reflects
(``vectors-000000000042.faiss``).  A file is written under a temporary name and
renamed into place, so a reader sees either the old complete file or the new
complete file, never a partial one; older generations are deleted afterwards.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DEFAULT_FACTORY", "GATHER_MAX", "VectorIndex", "latest_vector_file"]

log = logging.getLogger(__name__)

# Exact inner-product search with our own int64 ids (the catalog's image ids).
DEFAULT_FACTORY = "IDMap2,Flat"

# Restricted searches (filters): up to this many candidate ids, their vectors are fetched
# and scored directly (no pass over the index at all); above it, FAISS scans the index
# with an id selector that skips non-candidates before computing any distance.  On 100k
# 512-d vectors the direct path costs ~0.05 ms for 100 ids but grows faster than the
# selector scan, which costs ~0.5 ms + the candidates' dot products
# (scripts/bench_filters.py --sweep measures the crossover).
GATHER_MAX = 256

_FILE_RE = re.compile(r"^vectors-(\d{12})\.faiss$")


def _faiss() -> Any:
    import faiss

    return faiss


def latest_vector_file(folder: Path) -> tuple[Path, int] | None:
    """The newest saved vector file in ``folder`` and its generation, if any."""
    best: tuple[Path, int] | None = None
    for entry in os.scandir(folder):
        m = _FILE_RE.match(entry.name)
        if m and (best is None or int(m.group(1)) > best[1]):
            best = (Path(entry.path), int(m.group(1)))
    return best


class VectorIndex:
    """A FAISS index keyed by catalog image ids."""

    def __init__(self, index: Any, generation: int = 0) -> None:
        self._index = index
        self.generation = generation
        self._sorted_ids: np.ndarray | None = None

    @classmethod
    def empty(cls, dim: int, factory: str = DEFAULT_FACTORY) -> VectorIndex:
        faiss = _faiss()
        return cls(faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT))

    @classmethod
    def load(cls, folder: Path) -> VectorIndex | None:
        """Load the newest saved file in ``folder``; ``None`` when there is none."""
        faiss = _faiss()
        for _ in range(3):  # a writer may delete the file between listing and reading it
            found = latest_vector_file(folder)
            if found is None:
                return None
            try:
                return cls(faiss.read_index(str(found[0])), found[1])
            except RuntimeError:
                if found[0].exists():
                    log.warning("unreadable vector file %s; rebuilding from the catalog", found[0])
                    return None
        return None

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    @property
    def dim(self) -> int:
        return int(self._index.d)

    def ids(self) -> np.ndarray:
        """The ids of every stored vector (sorted; cached until the next change)."""
        if self._sorted_ids is None:
            self._sorted_ids = np.sort(_faiss().vector_to_array(self._index.id_map).astype(np.int64))
        return self._sorted_ids

    def contains(self, ids: np.ndarray) -> np.ndarray:
        """A boolean mask: which of ``ids`` have a vector here."""
        ids = np.asarray(ids, dtype=np.int64)
        have = self.ids()
        if len(have) == 0 or len(ids) == 0:
            return np.zeros(len(ids), dtype=bool)
        pos = np.minimum(np.searchsorted(have, ids), len(have) - 1)
        return have[pos] == ids

    def reconstruct(self, image_id: int) -> np.ndarray:
        return self._index.reconstruct(int(image_id))

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        """The stored vectors of ``ids`` (each must be present), one row per id."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._index.reconstruct_batch(ids)

    def all_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of everything stored, in storage order."""
        ids = _faiss().vector_to_array(self._index.id_map).astype(np.int64)
        if len(ids) == 0:
            return ids, np.zeros((0, self.dim), dtype=np.float32)
        return ids, self._index.index.reconstruct_n(0, len(ids))

    def reconstruct_many(self, ids: np.ndarray) -> np.ndarray:
        """The stored vectors of ``ids`` as an (n, dim) array (same as :meth:`vectors`)."""
        return self.vectors(ids)

    def upsert(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add vectors, replacing any already stored under the same ids."""
        if len(ids) == 0:
            return
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        self.remove(ids)
        self._index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids)
        self._sorted_ids = None

    def remove(self, ids: np.ndarray) -> None:
        if len(ids):
            self._index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64))
            self._sorted_ids = None

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, ids) per query row; missing slots have id -1.

        Args:
            allowed: when given, only these ids can be returned (a FAISS id selector).
        """
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = max(1, min(k, self.ntotal)) if self.ntotal else 1
        if allowed is None:
            return self._index.search(queries, k)
        faiss = _faiss()
        allowed = np.ascontiguousarray(allowed, dtype=np.int64)
        k = max(1, min(k, len(allowed)))
        selector = faiss.IDSelectorBatch(len(allowed), faiss.swig_ptr(allowed))
        return self._index.search(queries, k, params=faiss.SearchParameters(sel=selector))

    # -- one query, optionally restricted to candidate ids --------------------

    def _selector_params(self, candidates: np.ndarray) -> Any:
        """FAISS search parameters that skip every id not in ``candidates``."""
        faiss = _faiss()
        top = int(candidates.max())
        if top < 64 * max(self.ntotal, 1) + (1 << 20):
            # A bitmap over the id range: one bit test per stored vector, the cheapest check.
            mask = np.zeros(top + 8, dtype=bool)
            mask[candidates] = True
            sel = faiss.IDSelectorBitmap(np.packbits(mask, bitorder="little"))
        else:  # ids too sparse for a bitmap: a hash set (with a Bloom filter in front)
            sel = faiss.IDSelectorBatch(np.ascontiguousarray(candidates, dtype=np.int64))
        params = faiss.SearchParameters(sel=sel)
        params._keep = sel  # the SWIG object does not own the selector
        return params

    def top_k(self, query: np.ndarray, k: int, candidates: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k`` (scores, ids) of one query, best first, over all vectors or ``candidates``.

        ``candidates`` (image ids) need not all be present; absent ones are ignored.
        """
        q = np.ascontiguousarray(np.asarray(query, dtype=np.float32).reshape(1, -1))
        if candidates is None:
            if self.ntotal == 0:
                return np.zeros(0, np.float32), np.zeros(0, np.int64)
            scores, ids = self._index.search(q, max(1, min(k, self.ntotal)))
        else:
            candidates = np.asarray(candidates, dtype=np.int64)
            if len(candidates) <= GATHER_MAX:
                candidates = candidates[self.contains(candidates)]
                if len(candidates) == 0:
                    return np.zeros(0, np.float32), np.zeros(0, np.int64)
                scores1 = self.vectors(candidates) @ q[0]
                order = np.lexsort((candidates, -scores1))[:k]
                return scores1[order].astype(np.float32), candidates[order]
            scores, ids = self._index.search(q, max(1, min(k, len(candidates), self.ntotal)),
                                             params=self._selector_params(candidates))
        keep = ids[0] >= 0
        return scores[0][keep], ids[0][keep].astype(np.int64)

    def scores_above(
        self, query: np.ndarray, min_score: float, candidates: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Every (score, id) with score >= ``min_score``, best first (FAISS range search)."""
        q = np.ascontiguousarray(np.asarray(query, dtype=np.float32).reshape(1, -1))
        if self.ntotal == 0:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        if candidates is not None and len(candidates) <= GATHER_MAX:
            candidates = np.asarray(candidates, dtype=np.int64)
            candidates = candidates[self.contains(candidates)]
            scores = self.vectors(candidates) @ q[0] if len(candidates) else np.zeros(0, np.float32)
            ids = candidates
        else:
            if candidates is not None and len(candidates) == 0:
                return np.zeros(0, np.float32), np.zeros(0, np.int64)
            params = self._selector_params(np.asarray(candidates, np.int64)) if candidates is not None else None
            # FAISS keeps inner products strictly above the radius; step just below min_score.
            radius = float(np.nextafter(np.float32(min_score), np.float32(-np.inf)))
            _, scores, ids = self._index.range_search(q, radius, params=params)
            ids = ids.astype(np.int64)
        keep = scores >= min_score
        scores, ids = scores[keep], ids[keep]
        order = np.lexsort((ids, -scores))
        return scores[order].astype(np.float32), ids[order]

    def save(self, folder: Path) -> Path:
        """Write atomically as ``vectors-<generation>.faiss`` and drop older files."""
        faiss = _faiss()
        final = folder / f"vectors-{self.generation:012d}.faiss"
        tmp = folder / f".{final.name}.{os.getpid()}.tmp"
        try:
            faiss.write_index(self._index, str(tmp))
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                tmp.unlink()
        for entry in os.scandir(folder):
            m = _FILE_RE.match(entry.name)
            if m and int(m.group(1)) < self.generation:
                try:
                    os.unlink(entry.path)
                except FileNotFoundError:
                    pass
        return final
