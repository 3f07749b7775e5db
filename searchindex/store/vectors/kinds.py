"""FAISS index types: the size policy that picks one, and how to name, build and check them.

Index types are FAISS ``index_factory`` strings (``IDMap2,Flat``, ``IVF4096,SQfp16``...),
whose memory cost is computable before anything is built (:func:`estimate_bytes`).
:func:`choose_factory` is the policy for ``index_type="auto"``; :func:`planned_factory`
decides at the end of an indexing run whether the vector index should be rebuilt.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any

from ...errors import IndexTypeError

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_FACTORY",
    "FLAT_MAX",
    "canonical_factory",
    "choose_factory",
    "describe",
    "estimate_bytes",
    "is_ivf",
    "ivf_nlist",
    "ivf_of",
    "load_faiss",
    "make_index",
    "check_trainable",
    "min_train",
    "planned_factory",
    "train_size",
]

# Exact inner-product search with our own int64 ids (the catalog's image ids).
DEFAULT_FACTORY = "IDMap2,Flat"

# -- choosing the index type (scripts/bench_search.py measures every figure below) --------
#
# Exact search scans every vector: one 512-d query cost ~19 ms over 100k vectors and
# ~36 ms over 200k on the 2-core reference box (it grows linearly: ~78 ms at 400k),
# while encoding the query text already takes about as long as 100k.  So collections
# below FLAT_MAX stay exact (and need no training); above it an IVF index scans only
# the few lists nearest the query.  Its vectors are stored as fp16 (SQfp16: recall@10
# 0.98 at nprobe 4, ~1,040 B/vector with the id) when that fits the memory budget,
# else as 8-bit codes (SQ8: ~530 B/vector, needs about twice the nprobe for 0.95).
# 4-bit codes capped at recall 0.62 and PQ needed a refine step that cost more than
# SQ8 saves, so neither is chosen.
FLAT_MAX = 100_000
#: An IVF index goes back to exact search only below ``FLAT_RETURN * FLAT_MAX`` vectors,
#: so a collection hovering around the threshold does not rebuild back and forth.
FLAT_RETURN = 0.5
#: An IVF index is rebuilt (new list count, nprobe re-tuned) once the collection has
#: grown or shrunk by this factor since it was built: nlist ~ 4 sqrt(n) doubles per 4x.
IVF_REBUILD_FACTOR = 4.0
#: The default memory budget of the vector index, per image (issue 4's goal).
DEFAULT_BYTES_PER_VECTOR = 1200
#: Collection vectors used as queries when tuning (each excluded from its own answers).
TUNE_QUERIES = 500
#: k-means trains on this many vectors per list: FAISS's minimum (it prints a warning
#: below); more only lengthens training (k-means costs sample x nlist x dim x iterations).
TRAIN_PER_LIST = 39
#: Training sample of index types that train without IVF lists (SQ, PQ codecs).
TRAIN_OTHER = 20_000


def load_faiss() -> Any:
    import faiss

    return faiss


def ivf_nlist(n: int) -> int:
    """IVF list count for ``n`` vectors: a power of two near 4*sqrt(n), each list >= 39 vectors."""
    nlist = 2 ** round(math.log2(max(4 * math.sqrt(max(n, 1)), 16)))
    while nlist > 1 and n / nlist < 39:
        nlist //= 2
    return int(nlist)


def codec_bytes(codec: str, dim: int) -> float:
    """Bytes one vector's code takes in an IVF list for the codecs the policy picks from."""
    return {"SQfp16": 2 * dim, "SQ8": dim, "Flat": 4 * dim}[codec]


def estimate_bytes(n: int, dim: int, factory: str) -> int:
    """RAM of an index of ``n`` vectors built by ``factory`` (flat, or IVF with SQ8/SQfp16/Flat codes).

    Each vector costs its code plus its 8-byte id (in the IVF list, or the IDMap2
    table); an IVF index adds its centroids.
    """
    m = re.fullmatch(r"IVF(\d+),(\w+)", factory)
    if m is None:
        return int(n * (4 * dim + 8))
    return int(n * (codec_bytes(m.group(2), dim) + 8) + int(m.group(1)) * dim * 4)


def choose_factory(n_vectors: int, dim: int, memory_budget_bytes: int | None = None) -> str:
    """The FAISS factory string the policy picks for ``n_vectors`` of ``dim`` dimensions.

    Exact ``IDMap2,Flat`` below :data:`FLAT_MAX`; above it ``IVF{nlist},SQfp16``
    when that fits ``memory_budget_bytes`` (default :data:`DEFAULT_BYTES_PER_VECTOR`
    per vector), else ``IVF{nlist},SQ8``.  IVF lists store our int64 ids themselves.
    """
    if n_vectors < FLAT_MAX:
        return DEFAULT_FACTORY
    budget = DEFAULT_BYTES_PER_VECTOR * n_vectors if memory_budget_bytes is None else memory_budget_bytes
    nlist = ivf_nlist(n_vectors)
    for codec in ("SQfp16", "SQ8"):
        factory = f"IVF{nlist},{codec}"
        if estimate_bytes(n_vectors, dim, factory) <= budget:
            return factory
    log.warning("no index type fits %d bytes for %d vectors; using the smallest (SQ8)", budget, n_vectors)
    return f"IVF{nlist},SQ8"


def make_index(factory: str, dim: int) -> Any:
    """An empty FAISS index (inner product) that takes our int64 ids: IVF keeps them, others get IDMap2."""
    faiss = load_faiss()
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    if ivf_of(index) is None and not isinstance(index, faiss.IndexIDMap2):
        index = faiss.IndexIDMap2(index)
    return index


def ivf_of(index: Any) -> Any:
    """The IVF part of ``index`` (an ``IndexIVF``), or ``None`` when it has none."""
    try:
        return load_faiss().extract_index_ivf(index)
    except RuntimeError:
        return None


def describe(index: Any) -> str:
    from faiss.contrib.factory_tools import reverse_index_factory

    try:
        return str(reverse_index_factory(index))  # type: ignore[no-untyped-call]
    except (NotImplementedError, RuntimeError, AssertionError, KeyError, AttributeError):
        return type(index).__name__


def canonical_factory(spec: str, dim: int | None = None) -> str:
    """``spec`` as the factory string of the index it builds (``IDMap2,`` added where ids need it).

    Checked on ``dim`` when given, else on a few common sizes (a string is accepted
    when any of them builds).  Indexes that cannot remove vectors (HNSW) are refused:
    the index removes deleted images.

    Raises:
        IndexTypeError: FAISS cannot build ``spec``.
    """
    spec = spec.strip()
    if _LOSSY_TRANSFORM_RE.search(spec):
        raise IndexTypeError(f"index type {spec!r}: a vector transform that changes inner products (PCA, ITQ, "
                             "L2norm, Pad) stores vectors that neither searches nor `check` can compare with the "
                             "catalog's embeddings; use IVF or Flat types (an OPQ rotation is fine)")
    if "HNSW" in spec or "NSG" in spec:
        raise IndexTypeError(f"index type {spec!r}: graph indexes cannot remove vectors, which the index "
                             "needs when images are deleted; use IVF or Flat types")
    # Validate the structure on a one-list stand-in: FAISS allocates every list of an IVF index
    # when it builds one, so checking IVF99999999 as given would cost gigabytes.
    lists = [int(n) for n in _LISTS_RE.findall(spec)]
    if any(not 1 <= n <= MAX_NLIST for n in lists):
        raise IndexTypeError(f"index type {spec!r}: an IVF list count is between 1 and {MAX_NLIST:,} "
                             "(about 4 x sqrt(images) is right; 'auto' picks it)")
    probe = _LISTS_RE.sub("IVF1", spec)
    last: Exception | None = None
    for d in (dim,) if dim else (512, 768, 1024, 64):
        try:
            index = make_index(probe, d)
        except RuntimeError as exc:
            last = exc
            continue
        described = describe(index)
        # The stand-in's list counts back, in order (outer IVF first, as in the string given).
        if len(_STAND_IN_RE.findall(described)) != len(lists) or described == type(index).__name__:
            raise IndexTypeError(f"index type {spec!r} builds {described!r}, which cannot be recorded as a factory "
                                 "string and rebuilt; give an index_factory string such as 'IVF1024,SQ8', or 'auto'")
        parts = _STAND_IN_RE.split(described)
        return parts[0] + "".join(f"IVF{n}{rest}" for n, rest in zip(lists, parts[1:], strict=True))
    detail = str(last).strip().splitlines()[-1] if last else ""
    where = f" for {dim}-d vectors" if dim else ""
    raise IndexTypeError(f"FAISS cannot build index type {spec!r}{where} ({detail}); "
                         "give an index_factory string such as 'IDMap2,Flat' or 'IVF1024,SQ8', or 'auto'")


#: The most IVF lists an index type may ask for (a billion vectors use ~2^16-2^18).
MAX_NLIST = 1 << 20
_LISTS_RE = re.compile(r"IVF(\d+)")
_STAND_IN_RE = re.compile(r"IVF1(?!\d)")
_LOSSY_TRANSFORM_RE = re.compile(r"(^|[,(])\s*(PCA|ITQ|L2norm|Pad)", re.IGNORECASE)


def check_trainable(factory: str, n_vectors: int) -> None:
    """Raise :class:`IndexTypeError` when ``n_vectors`` are too few to ever train ``factory``."""
    need = min_train(factory)
    if need > n_vectors:
        raise IndexTypeError(
            f"index type {factory!r} needs at least {need:,} images to train, but the index would hold at most "
            f"{n_vectors:,}: use fewer lists (IVF{ivf_nlist(max(n_vectors, 1))},...) or 'auto'"
        )


def min_train(factory: str) -> int:
    """Vectors needed to train ``factory``: its IVF list count; 256 for other codecs that train."""
    m = re.search(r"IVF(\d+)", factory)
    if m:
        return int(m.group(1))
    return 256 if re.search(r"SQ|PQ|LSH|RQ|LSQ", factory) else 0


def train_size(factory: str, n_vectors: int) -> int:
    """How many vectors :func:`build_index` should get as its training sample."""
    m = re.search(r"IVF(\d+)", factory)
    want = TRAIN_PER_LIST * int(m.group(1)) if m else TRAIN_OTHER
    return min(n_vectors, max(want, TUNE_QUERIES))


def is_ivf(factory: str) -> bool:
    return re.search(r"IVF\d+", factory) is not None


def planned_factory(
    current: str, built_at: int, n_vectors: int, dim: int, requested: str = "auto",
) -> str | None:
    """The factory to rebuild the index into, or ``None`` to keep ``current``.

    Args:
        current: the factory of the saved index.
        built_at: how many vectors it held when it was built (0: unknown).
        requested: ``auto`` (the policy, :func:`choose_factory`) or a factory string.

    An explicit request is followed as soon as there are enough vectors to train it.
    ``auto`` has hysteresis: an IVF index returns to flat only below
    ``FLAT_RETURN * FLAT_MAX`` vectors, and is rebuilt with a new list count only
    after the collection grew or shrank :data:`IVF_REBUILD_FACTOR`-fold.
    """
    if requested != "auto":
        if requested == current or n_vectors < min_train(requested):
            return None
        return requested
    target = choose_factory(n_vectors, dim)
    if target == current:
        return None
    if is_ivf(current):
        if not is_ivf(target):
            return target if n_vectors < FLAT_RETURN * FLAT_MAX else None
        same_codec = current.split(",", 1)[1] == target.split(",", 1)[1]
        if same_codec and built_at > 0 and 1 / IVF_REBUILD_FACTOR < n_vectors / built_at < IVF_REBUILD_FACTOR:
            return None
    return target


