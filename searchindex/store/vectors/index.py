"""The vector index: FAISS over L2-normalised vectors, a cache of the catalog.

Which FAISS index type to use is decided in :mod:`searchindex.store.vectors.kinds`
(its names stay importable from here), building one in :mod:`searchindex.store.vectors.build`,
its file format in :mod:`searchindex.store.vectors.file`; this module searches and saves.

Each saved file carries in its name the catalog generation it reflects
(``vectors-000000000042.faiss``).  A file is written under a temporary name and
renamed into place, so a reader sees either the old complete file or the new
complete file, never a partial one; older generations are deleted afterwards.
A header line before the FAISS data records the index's identity (the catalog's
``index_id``), generation, dimension, count and a SHA-256 of the data: a damaged
file, or one from another index, is never used.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ...threads import faiss_call
from .file import (
    VectorFileError,
    latest_vector_file,
    read_vector_file,
    write_vector_file,
)
from .kinds import (
    DEFAULT_FACTORY,
    describe,
    ivf_of,
    load_faiss,
    make_index,
)

__all__ = [
    "GATHER_MAX",
    "VectorIndex",
]

log = logging.getLogger(__name__)

# Restricted searches (filters): up to this many candidate ids, their vectors are fetched
# and scored directly (no pass over the index at all); above it, FAISS scans the index
# with an id selector that skips non-candidates before computing any distance.  On 100k
# 512-d vectors the direct path costs ~0.05 ms for 100 ids but grows faster than the
# selector scan, which costs ~0.5 ms + the candidates' dot products
# (scripts/bench_filters.py --sweep measures the crossover).
GATHER_MAX = 256


class VectorIndex:
    """A FAISS index keyed by catalog image ids.

    Flat indexes keep their ids in an ``IDMap2`` table and give back their exact
    vectors.  IVF indexes keep the ids in their lists and store lossy codes, so
    the exact vectors of given ids (the gather path of filtered search, few-shot
    reranking, duplicates) come from :attr:`fetch`, which the owner points at the
    catalog.
    """

    def __init__(self, index: Any, generation: int = 0) -> None:
        self._index = index
        self.generation = generation
        self._sorted_ids: np.ndarray | None = None
        self._ivf = ivf_of(index)
        #: ids -> their exact vectors (one row per id; zeros for unknown ids); needed for IVF.
        self.fetch: Callable[[np.ndarray], np.ndarray] | None = None

    @property
    def faiss_index(self) -> Any:
        """The FAISS index underneath, to read (its type, its lists, a copy to merge); changing it
        behind this object's back breaks its bookkeeping."""
        return self._index

    @classmethod
    def empty(cls, dim: int, factory: str = DEFAULT_FACTORY) -> VectorIndex:
        return cls(make_index(factory, dim))

    @classmethod
    def load(cls, folder: Path, index_id: str | None = None, dim: int | None = None,
             state: Callable[[int], str | None] | None = None) -> VectorIndex | None:
        """Load the newest saved file in ``folder``; ``None`` when there is none or it cannot be trusted.

        A file is used only when its header's checksum matches its contents and
        its identity, generation, dimension and count match (``index_id``/``dim``:
        those of the catalog, when given), and its state token is the catalog's for its generation
        (``state``, when given); otherwise a warning says so and the
        caller rebuilds the vectors from the catalog.
        """
        faiss = load_faiss()
        for _ in range(3):  # a writer may delete the file between listing and reading it
            found = latest_vector_file(folder)
            if found is None:
                return None
            try:
                payload, header = read_vector_file(found[0], found[1], index_id, dim, state)
            except FileNotFoundError:
                continue
            except (OSError, VectorFileError) as exc:
                log.warning("vector file %s cannot be used (%s); rebuilding the vectors from the catalog",
                            found[0], exc)
                return None
            try:
                index = faiss.deserialize_index(payload)
            except RuntimeError:
                log.warning("unreadable vector file %s; rebuilding from the catalog", found[0])
                return None
            if int(index.ntotal) != header["count"] or int(index.d) != header["dim"]:
                log.warning("vector file %s does not hold what its header says; rebuilding from the catalog",
                            found[0])
                return None
            return cls(index, found[1])
        return None

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    @property
    def dim(self) -> int:
        return int(self._index.d)

    @property
    def factory(self) -> str:
        """The index_factory string of this index (e.g. ``IDMap2,Flat``, ``IVF4096,SQfp16``)."""
        return describe(self._index)

    @property
    def is_trained(self) -> bool:
        return bool(self._index.is_trained)

    @property
    def nprobe(self) -> int | None:
        """IVF lists scanned per query (``None`` for other index types)."""
        return int(self._ivf.nprobe) if self._ivf is not None else None

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        if self._ivf is not None:
            self._ivf.nprobe = max(1, min(int(value), int(self._ivf.nlist)))

    def memory_bytes(self) -> int:
        """Size of the index in memory, measured as its serialized size."""
        return int(load_faiss().serialize_index(self._index).nbytes)

    def ids(self) -> np.ndarray:
        """The ids of every stored vector (sorted; cached until the next change)."""
        if self._sorted_ids is None:
            self._sorted_ids = np.sort(self._stored_ids())
        return self._sorted_ids

    def _stored_ids(self) -> np.ndarray:
        faiss = load_faiss()
        if self._ivf is None:
            return np.asarray(faiss.vector_to_array(self._index.id_map), dtype=np.int64)
        lists = self._ivf.invlists
        parts = [faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
                 for i in range(self._ivf.nlist) if lists.list_size(i)]
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)

    def contains(self, ids: np.ndarray) -> np.ndarray:
        """A boolean mask: which of ``ids`` have a vector here."""
        ids = np.asarray(ids, dtype=np.int64)
        have = self.ids()
        if len(have) == 0 or len(ids) == 0:
            return np.zeros(len(ids), dtype=bool)
        pos = np.minimum(np.searchsorted(have, ids), len(have) - 1)
        return np.asarray(have[pos] == ids)

    def reconstruct(self, image_id: int) -> np.ndarray:
        return np.asarray(self.vectors(np.array([image_id], dtype=np.int64))[0])

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        """The stored vectors of ``ids`` (each must be present), one row per id."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self._ivf is not None:
            if self.fetch is None:
                raise RuntimeError("an IVF vector index needs a fetch function to give back vectors")
            return np.asarray(self.fetch(ids), dtype=np.float32).reshape(len(ids), self.dim)
        return np.asarray(faiss_call(len(ids) * self.dim, self._index.reconstruct_batch, ids))

    def all_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of everything stored, in storage order."""
        ids = self._stored_ids()
        if len(ids) == 0:
            return ids, np.zeros((0, self.dim), dtype=np.float32)
        if self._ivf is not None:
            return ids, self.vectors(ids)
        return ids, self._index.index.reconstruct_n(0, len(ids))

    def upsert(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add vectors, replacing any already stored under the same ids."""
        if len(ids) == 0:
            return
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        self.remove(ids)
        nlist = int(self._ivf.nlist) if self._ivf is not None else 1
        faiss_call(len(ids) * nlist * self.dim, self._index.add_with_ids,
                   np.ascontiguousarray(vectors, dtype=np.float32), ids)
        self._sorted_ids = None

    def remove(self, ids: np.ndarray) -> None:
        if len(ids):
            faiss_call(self.ntotal, self._index.remove_ids, np.ascontiguousarray(ids, dtype=np.int64))
            self._sorted_ids = None

    def _work(self, queries: int, params: Any) -> float:
        """Multiply-adds of a search of ``queries`` vectors: every stored vector (flat), or the list
        centroids and the probed lists (IVF)."""
        if self._ivf is None:
            return float(queries) * self.ntotal * self.dim
        nlist = int(self._ivf.nlist)
        nprobe = int(params.nprobe) if params is not None else int(self._ivf.nprobe)
        return float(queries) * (nlist + nprobe * self.ntotal / max(nlist, 1)) * self.dim

    def _params(self, k: int, sel: Any = None, share: float = 1.0) -> Any:
        """Search parameters: the selector, and for IVF enough lists for ``k`` results.

        IVF probes its tuned ``nprobe`` lists; a restriction to a ``share`` of the
        vectors probes ``1/share`` times more (the same expected number of
        eligible vectors), and a large ``k`` probes lists holding ~2k vectors, so a
        filter or a long result list does not come back short.
        """
        faiss = load_faiss()
        if self._ivf is None:
            return None if sel is None else faiss.SearchParameters(sel=sel)
        nlist, base = int(self._ivf.nlist), int(self._ivf.nprobe)
        eligible_per_list = max(self.ntotal * share / nlist, 1e-9)
        nprobe = max(math.ceil(base / max(share, 1e-9)), math.ceil(2 * k / eligible_per_list))
        params = faiss.SearchParametersIVF(nprobe=min(nlist, nprobe))
        if sel is not None:
            params.sel = sel
        return params

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
            return self._search_filled(queries, k, self._params(k))
        faiss = load_faiss()
        allowed = np.ascontiguousarray(allowed, dtype=np.int64)
        k = max(1, min(k, len(allowed)))
        selector = faiss.IDSelectorBatch(len(allowed), faiss.swig_ptr(allowed))
        params = self._params(k, selector, len(allowed) / max(self.ntotal, 1))
        return self._search_filled(queries, k, params)

    def _search_filled(self, queries: np.ndarray, k: int, params: Any) -> tuple[np.ndarray, np.ndarray]:
        """Search; for IVF, queries that came back with fewer than ``k`` hits probe twice as
        many lists, until they are filled or every list has been probed.

        The lists nearest a query can hold fewer vectors than ``k`` (or than the
        filter lets through), however the tuned ``nprobe`` was chosen.
        """
        scores, ids = faiss_call(self._work(len(queries), params), self._index.search, queries, k, params=params)
        if self._ivf is None or params is None:
            return scores, ids
        nlist, nprobe = int(self._ivf.nlist), int(params.nprobe)
        short = np.flatnonzero((ids < 0).any(axis=1))
        while len(short) and nprobe < nlist:
            nprobe = min(nlist, 2 * nprobe)
            params.nprobe = nprobe
            more_scores, more_ids = faiss_call(self._work(len(short), params), self._index.search, queries[short],
                                               k, params=params)
            scores[short], ids[short] = more_scores, more_ids
            short = short[(more_ids < 0).any(axis=1)]
        return scores, ids

    # -- one query, optionally restricted to candidate ids --------------------

    def _selector_params(self, candidates: np.ndarray, k: int) -> Any:
        """FAISS search parameters that skip every id not in ``candidates``."""
        faiss = load_faiss()
        top = int(candidates.max())
        if top < 64 * max(self.ntotal, 1) + (1 << 20):
            # A bitmap over the id range: one bit test per stored vector, the cheapest check.
            mask = np.zeros(top + 8, dtype=bool)
            mask[candidates] = True
            sel = faiss.IDSelectorBitmap(np.packbits(mask, bitorder="little"))
        else:  # ids too sparse for a bitmap: a hash set (with a Bloom filter in front)
            sel = faiss.IDSelectorBatch(np.ascontiguousarray(candidates, dtype=np.int64))
        params = self._params(k, sel, min(1.0, len(candidates) / max(self.ntotal, 1)))
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
            k = max(1, min(k, self.ntotal))
            scores, ids = self._search_filled(q, k, self._params(k))
        else:
            candidates = np.asarray(candidates, dtype=np.int64)
            if len(candidates) <= GATHER_MAX:
                candidates = candidates[self.contains(candidates)]
                if len(candidates) == 0:
                    return np.zeros(0, np.float32), np.zeros(0, np.int64)
                scores1 = self.vectors(candidates) @ q[0]
                order = np.lexsort((candidates, -scores1))[:k]
                return scores1[order].astype(np.float32), candidates[order]
            k = max(1, min(k, len(candidates), self.ntotal))
            scores, ids = self._search_filled(q, k, self._selector_params(candidates, k))
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
            params = (self._selector_params(np.asarray(candidates, np.int64), 1) if candidates is not None
                      else self._params(1))
            # FAISS keeps inner products strictly above the radius; step just below min_score.
            radius = float(np.nextafter(np.float32(min_score), np.float32(-np.inf)))
            _, scores, ids = faiss_call(self._work(1, params), self._index.range_search, q, radius, params=params)
            ids = ids.astype(np.int64)
        keep = scores >= min_score
        scores, ids = scores[keep], ids[keep]
        order = np.lexsort((ids, -scores))
        return scores[order].astype(np.float32), ids[order]

    def save(self, folder: Path, index_id: str = "", state: str | None = None) -> Path:
        """Write atomically as ``vectors-<generation>.faiss`` (with the identity header of
        :mod:`searchindex.store.vectors.file`; ``state``: the catalog's token of this generation)
        and drop older files."""
        payload = load_faiss().serialize_index(self._index)
        return write_vector_file(folder, payload, index_id=index_id, generation=self.generation, dim=self.dim,
                                 count=self.ntotal, state=state)
