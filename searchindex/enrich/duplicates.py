"""Near-duplicate detection over the stored embeddings.

Two images are near-duplicates when the cosine similarity of their embeddings
is at least a threshold: resized, recompressed, lightly cropped or brightened
copies of a photo land almost on the same point of CLIP's space.  Pairs come
from a FAISS range search of every vector against all the others (never a
Python loop over pairs): exact (a flat index, blocked matrix products) up to
:data:`EXACT_MAX` vectors, an inverted-file index (IVF, :data:`IVF_NPROBE` of
its cells probed per vector) above that, where near-duplicates, being so close,
almost always share a cell.  Pairs are then joined into groups (connected
components: a copy of a copy is in the group too).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from ..defaults import DEFAULT_DUPLICATE_THRESHOLD
from ..errors import QueryError
from ..results import DuplicateGroup, DuplicateImage
from ..store.catalog.database import Catalog
from ..store.vector_store import VectorStore
from ..threads import faiss_call

__all__ = [
    "DEFAULT_THRESHOLD",
    "EXACT_MAX",
    "IVF_NPROBE",
    "find_duplicates",
    "find_pairs",
    "group_pairs",
]

log = logging.getLogger(__name__)

#: Default cosine similarity for "near-identical" (measured by scripts/eval_duplicates.py).
DEFAULT_THRESHOLD = DEFAULT_DUPLICATE_THRESHOLD
#: Up to this many vectors the range search is exact.
EXACT_MAX = 20_000
#: Cells of the IVF index probed per vector above EXACT_MAX.
IVF_NPROBE = 4
_CHUNK = 4096  # query vectors per range-search call: bounds the memory of one call's results


def _faiss() -> Any:
    import faiss

    return faiss


def find_pairs(vectors: np.ndarray, threshold: float, method: str = "auto") -> np.ndarray:
    """Row-index pairs ``(i, j)``, ``i < j``, whose vectors' inner product is >= ``threshold``.

    Args:
        vectors: unit-length rows.
        method: ``"exact"``, ``"ivf"``, or ``"auto"`` (exact up to :data:`EXACT_MAX` rows).

    Returns:
        An ``(n_pairs, 2)`` int64 array, sorted.
    """
    faiss = _faiss()
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    n, d = x.shape
    if n < 2:
        return np.zeros((0, 2), dtype=np.int64)
    if method not in ("auto", "exact", "ivf"):
        raise ValueError(f"unknown method {method!r}")
    nlist: int | None = None
    if method == "exact" or (method == "auto" and n <= EXACT_MAX):
        index = faiss.IndexFlatIP(d)
        index.add(x)
    else:
        # ~2 sqrt(n) cells trained briefly on 39 points per cell (FAISS's minimum): the
        # partition only has to keep near-identical vectors together, not be a fine
        # quantiser, and k-means would otherwise dominate the run time.
        nlist = max(1, int(min(max(64, 2 * math.sqrt(n)), n // 39)))
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.niter = 10
        rng = np.random.default_rng(0)
        sample = x if n <= 39 * nlist else x[np.sort(rng.choice(n, 39 * nlist, replace=False))]
        faiss_call(len(sample) * nlist * 10 * d, index.train, sample)
        faiss_call(n * nlist * d, index.add, x)
        index.nprobe = min(IVF_NPROBE, nlist)
        log.debug("duplicates: IVF with %d cells, %d probed, over %d vectors", nlist, index.nprobe, n)
    # FAISS keeps inner products strictly above the radius; step just below the threshold.
    radius = float(np.nextafter(np.float32(threshold), np.float32(-np.inf)))
    parts = []
    for start in range(0, n, _CHUNK):
        chunk = x[start : start + _CHUNK]
        per_query = n if nlist is None else nlist + index.nprobe * n / nlist
        lims, scores, labels = faiss_call(len(chunk) * per_query * d, index.range_search, chunk, radius)
        rows = np.repeat(np.arange(start, start + len(lims) - 1, dtype=np.int64), np.diff(lims).astype(np.int64))
        cols = labels.astype(np.int64)
        keep = (cols != rows) & (scores >= threshold)
        a, b = rows[keep], cols[keep]
        parts.append(np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1))
    pairs = np.concatenate(parts) if parts else np.zeros((0, 2), dtype=np.int64)
    # Each pair is usually found from both ends (with IVF, sometimes from one only): keep it once.
    return np.unique(pairs, axis=0) if len(pairs) else pairs


def group_pairs(pairs: np.ndarray, n: int) -> list[np.ndarray]:
    """Connected components (of size >= 2) of the graph on ``n`` nodes with edges ``pairs``."""
    parent = np.arange(n)

    def find(a: int) -> int:
        root = a
        while parent[root] != root:
            root = parent[root]
        while parent[a] != root:  # path compression
            parent[a], a = root, parent[a]
        return root

    for a, b in pairs.tolist():
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    members = np.unique(pairs) if len(pairs) else np.zeros(0, dtype=np.int64)
    roots = np.array([find(int(m)) for m in members], dtype=np.int64)
    order = np.lexsort((members, roots))
    members, roots = members[order], roots[order]
    cuts = np.flatnonzero(np.diff(roots)) + 1
    return [g for g in np.split(members, cuts) if len(g) >= 2]


def find_duplicates(catalog: Catalog, vectors: VectorStore,
                    threshold: float = DEFAULT_THRESHOLD) -> list[DuplicateGroup]:
    """Groups of near-identical images of an index (see :meth:`searchindex.Index.duplicates`).

    Raises:
        QueryError: ``threshold`` is not in (0, 1].
    """
    if not 0 < threshold <= 1:
        raise QueryError(f"a duplicate threshold is a cosine similarity in (0, 1], not {threshold}")
    ids, x = vectors.current().all_vectors()
    groups = group_pairs(find_pairs(x, threshold), len(ids))
    rows = catalog.read.records(int(ids[i]) for g in groups for i in g)
    out = []
    for g in groups:
        members = [(int(i), rows[int(ids[i])]) for i in g if int(ids[i]) in rows]
        if len(members) < 2:  # removed by a concurrent writer
            continue
        # Best copy: most pixels, then oldest (date taken; unknown dates after known ones).
        members.sort(key=lambda m: (-m[1].width * m[1].height, m[1].taken_at is None, m[1].taken_at or "",
                                    m[1].mtime_ns, m[1].path))
        best = x[members[0][0]]
        out.append(DuplicateGroup(tuple(
            DuplicateImage(r.path, r.id, r.width, r.height, r.size, r.mtime_ns, r.taken_at,
                           1.0 if n == 0 else min(1.0, float(x[i] @ best)))
            for n, (i, r) in enumerate(members)
        )))
    out.sort(key=lambda grp: (-len(grp.images), grp.best.path))
    return out
