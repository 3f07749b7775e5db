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
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..defaults import DEFAULT_DUPLICATE_THRESHOLD

__all__ = [
    "DEFAULT_THRESHOLD",
    "EXACT_MAX",
    "IVF_NPROBE",
    "DuplicateGroup",
    "DuplicateImage",
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


@dataclass(frozen=True)
class DuplicateImage:
    """One copy in a group of near-duplicates."""

    path: str
    image_id: int
    width: int
    height: int
    size: int
    mtime_ns: int
    taken_at: str | None  # date taken, local wall-clock ISO text (see searchindex.ingest.metadata)
    similarity: float  # cosine similarity to the group's best copy (1.0 for the best copy itself)


@dataclass(frozen=True)
class DuplicateGroup:
    """Near-identical images, best copy first: largest resolution, then oldest, then path."""

    images: tuple[DuplicateImage, ...]

    @property
    def best(self) -> DuplicateImage:
        return self.images[0]


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
        index.train(sample)
        index.add(x)
        index.nprobe = min(IVF_NPROBE, nlist)
        log.debug("duplicates: IVF with %d cells, %d probed, over %d vectors", nlist, index.nprobe, n)
    # FAISS keeps inner products strictly above the radius; step just below the threshold.
    radius = float(np.nextafter(np.float32(threshold), np.float32(-np.inf)))
    parts = []
    for start in range(0, n, _CHUNK):
        lims, scores, labels = index.range_search(x[start : start + _CHUNK], radius)
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
