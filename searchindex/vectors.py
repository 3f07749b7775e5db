"""The vector index: FAISS over L2-normalised vectors, a cache of the catalog.

Each saved file carries in its name the catalog generation it reflects
(``vectors-000000000042.faiss``).  A file is written under a temporary name and
renamed into place, so a reader sees either the old complete file or the new
complete file, never a partial one; older generations are deleted afterwards.
A header line before the FAISS data records the index's identity (the catalog's
``index_id``), generation, dimension, count and a SHA-256 of the data: a damaged
file, or one from another index, is never used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import IndexTypeError

__all__ = [
    "DEFAULT_FACTORY",
    "FLAT_MAX",
    "GATHER_MAX",
    "VECTOR_MAGIC",
    "BuildReport",
    "VectorFileError",
    "VectorIndex",
    "build_index",
    "canonical_factory",
    "choose_factory",
    "estimate_bytes",
    "ivf_nlist",
    "latest_vector_file",
    "planned_factory",
    "read_vector_file",
    "train_size",
]

log = logging.getLogger(__name__)

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
#: Search parameters are tuned to reach this recall@10 against exact search.
DEFAULT_RECALL = 0.95
#: Collection vectors used as queries when tuning (each excluded from its own answers).
TUNE_QUERIES = 500
#: Tuning aims this far above the recall target: on 150k vectors the tuned nprobe gave
#: 0.952 on the tuning queries but 0.943 on held-out ones (scripts/bench_search.py).
TUNE_MARGIN = 0.01
#: Tuning stops trying larger nprobe values after this many seconds (keeps the best so far).
TUNE_SECONDS = 60.0
#: k-means trains on this many vectors per list: FAISS's minimum (it prints a warning
#: below); more only lengthens training (k-means costs sample x nlist x dim x iterations).
TRAIN_PER_LIST = 39
#: Training sample of index types that train without IVF lists (SQ, PQ codecs).
TRAIN_OTHER = 20_000
NPROBES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)

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


def ivf_nlist(n: int) -> int:
    """IVF list count for ``n`` vectors: a power of two near 4*sqrt(n), each list >= 39 vectors."""
    nlist = 2 ** round(math.log2(max(4 * math.sqrt(max(n, 1)), 16)))
    while nlist > 1 and n / nlist < 39:
        nlist //= 2
    return nlist


def _codec_bytes(codec: str, dim: int) -> float:
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
    return int(n * (_codec_bytes(m.group(2), dim) + 8) + int(m.group(1)) * dim * 4)


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


def _make(factory: str, dim: int) -> Any:
    """An empty FAISS index (inner product) that takes our int64 ids: IVF keeps them, others get IDMap2."""
    faiss = _faiss()
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    if _ivf(index) is None and not isinstance(index, faiss.IndexIDMap2):
        index = faiss.IndexIDMap2(index)
    return index


def _ivf(index: Any) -> Any:
    """The IVF part of ``index`` (an ``IndexIVF``), or ``None`` when it has none."""
    try:
        return _faiss().extract_index_ivf(index)
    except RuntimeError:
        return None


def _describe(index: Any) -> str:
    from faiss.contrib.factory_tools import reverse_index_factory

    try:
        return str(reverse_index_factory(index))
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
    last: Exception | None = None
    for d in (dim,) if dim else (512, 768, 1024, 64):
        try:
            index = _make(spec, d)
        except RuntimeError as exc:
            last = exc
            continue
        if "HNSW" in spec or "NSG" in spec:
            raise IndexTypeError(f"index type {spec!r}: graph indexes cannot remove vectors, which the index "
                                 "needs when images are deleted; use IVF or Flat types")
        return _describe(index)
    detail = str(last).strip().splitlines()[-1] if last else ""
    where = f" for {dim}-d vectors" if dim else ""
    raise IndexTypeError(f"FAISS cannot build index type {spec!r}{where} ({detail}); "
                         "give an index_factory string such as 'IDMap2,Flat' or 'IVF1024,SQ8', or 'auto'")


def _min_train(factory: str) -> int:
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


def _is_ivf(factory: str) -> bool:
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
        if requested == current or n_vectors < _min_train(requested):
            return None
        return requested
    target = choose_factory(n_vectors, dim)
    if target == current:
        return None
    if _is_ivf(current):
        if not _is_ivf(target):
            return target if n_vectors < FLAT_RETURN * FLAT_MAX else None
        same_codec = current.split(",", 1)[1] == target.split(",", 1)[1]
        if same_codec and built_at > 0 and 1 / IVF_REBUILD_FACTOR < n_vectors / built_at < IVF_REBUILD_FACTOR:
            return None
    return target


@dataclass(frozen=True)
class BuildReport:
    """How a vector index was built: its type, size and tuned search parameter."""

    factory: str
    vectors: int
    nprobe: int | None  # IVF only
    recall: float | None  # recall@10 of the tuned setting on the tuning queries
    train_s: float
    add_s: float
    tune_s: float


def build_index(
    factory: str,
    dim: int,
    chunks: Iterable[tuple[np.ndarray, np.ndarray]],
    sample: tuple[np.ndarray, np.ndarray],
    *,
    recall_target: float = DEFAULT_RECALL,
    k: int = 10,
    tune_queries: int = TUNE_QUERIES,
    tune_seconds: float = TUNE_SECONDS,
) -> tuple[VectorIndex, BuildReport]:
    """Build an index of type ``factory`` from ``(ids, vectors)`` chunks, tuned to a recall target.

    Args:
        chunks: every vector to add, in chunks (e.g. streamed from the catalog).
        sample: ``(ids, vectors)``, a random sample of the same vectors: the
            training set, and its first ``tune_queries`` rows are the tuning
            queries (their exact neighbours are found while the chunks stream by).
        recall_target: an IVF index gets the smallest ``nprobe`` whose recall@k
            on the tuning queries (each excluded from its own answers) reaches it
            plus :data:`TUNE_MARGIN`.
    """
    index = _make(factory, dim)
    ivf = _ivf(index)
    sample_ids, sample_x = sample
    sample_x = np.ascontiguousarray(sample_x, dtype=np.float32)
    t0 = time.perf_counter()
    if not index.is_trained:
        if ivf is not None:
            ivf.cp.niter = 10  # k-means iterations: 10 (FAISS's default) bounds training time
        index.train(sample_x)
    t_train = time.perf_counter() - t0
    tuning = ivf is not None and len(sample_x) > 0 and tune_queries > 0
    q = sample_x[:tune_queries] if tuning else np.zeros((0, dim), np.float32)
    q_ids = np.asarray(sample_ids[: len(q)], dtype=np.int64)
    top_s = np.full((len(q), 0), -np.inf, np.float32)
    top_i = np.zeros((len(q), 0), np.int64)
    t0 = time.perf_counter()
    for ids, x in chunks:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        x = np.ascontiguousarray(x, dtype=np.float32)
        index.add_with_ids(x, ids)
        if len(q):  # exact neighbours of the tuning queries: the chunk's best k+1, merged with the best so far
            s = q @ x.T
            best = np.argpartition(-s, min(k, s.shape[1] - 1), axis=1)[:, : k + 1]
            s = np.concatenate([top_s, np.take_along_axis(s, best, 1)], axis=1)
            i = np.concatenate([top_i, ids[best]], axis=1)
            keep = np.argpartition(-s, min(k, s.shape[1] - 1), axis=1)[:, : k + 1]
            top_s, top_i = np.take_along_axis(s, keep, 1), np.take_along_axis(i, keep, 1)
    t_add = time.perf_counter() - t0
    vecs = VectorIndex(index)
    nprobe = recall = None
    t0 = time.perf_counter()
    if tuning and index.ntotal:
        order = np.argsort(-top_s, axis=1, kind="stable")
        truth = np.take_along_axis(top_i, order, 1)
        nprobe, recall = _tune_nprobe(index, ivf, q, q_ids, truth, k, min(1.0, recall_target + TUNE_MARGIN),
                                      tune_seconds)
        ivf.nprobe = nprobe  # saved with the index
        vecs.nprobe = nprobe
    report = BuildReport(vecs.factory, vecs.ntotal, nprobe, recall, t_train, t_add, time.perf_counter() - t0)
    log.info("built %s", report)
    return vecs, report


def _recall_without_self(found: np.ndarray, truth: np.ndarray, self_ids: np.ndarray, k: int) -> float:
    hits = 0
    for f, t, me in zip(found, truth, self_ids, strict=True):
        hits += len(set(f[f != me][:k].tolist()) & set(t[t != me][:k].tolist()))
    return hits / (k * len(self_ids))


def _tune_nprobe(
    index: Any, ivf: Any, q: np.ndarray, q_ids: np.ndarray, truth: np.ndarray, k: int, target: float,
    seconds: float,
) -> tuple[int, float]:
    """The smallest nprobe reaching ``target`` recall@k (or the best tried within ``seconds``)."""
    t_end = time.perf_counter() + seconds
    best = (1, 0.0)
    for nprobe in [p for p in NPROBES if p < ivf.nlist] + [ivf.nlist]:
        ivf.nprobe = nprobe
        _, found = index.search(q, k + 1)
        recall = _recall_without_self(found, truth, q_ids, k)
        best = (nprobe, recall)
        if recall >= target:
            return best
        if time.perf_counter() > t_end:
            log.warning("nprobe tuning stopped after %.0f s at nprobe=%d (recall@%d %.3f < %.2f)",
                        seconds, nprobe, k, recall, target)
            break
    return best


def latest_vector_file(folder: Path) -> tuple[Path, int] | None:
    """The newest saved vector file in ``folder`` and its generation, if any."""
    best: tuple[Path, int] | None = None
    for entry in os.scandir(folder):
        m = _FILE_RE.match(entry.name)
        if m and (best is None or int(m.group(1)) > best[1]):
            best = (Path(entry.path), int(m.group(1)))
    return best


#: The first bytes of a vector file; a JSON header line follows, then the FAISS data.
VECTOR_MAGIC = b"searchindex-vectors 1\n"


class VectorFileError(Exception):
    """A vector file that does not belong to, or does not match, its catalog (the message says how)."""


def read_vector_file(path: Path, generation: int, index_id: str | None = None,
                     dim: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """The FAISS data of a vector file and its header, once both are checked.

    Raises:
        VectorFileError: no header (an older searchindex wrote it), a checksum that
            does not match (the file was damaged), or an identity, generation or
            dimension other than expected.
        OSError: the file cannot be read.
    """
    with open(path, "rb") as fh:
        head = fh.read(len(VECTOR_MAGIC))
        if head != VECTOR_MAGIC:
            raise VectorFileError("no identity header (written by an older searchindex, or not a vector file)")
        try:
            header = json.loads(fh.readline(4096))
            header = {k: header[k] for k in ("index_id", "generation", "dim", "count", "sha256")}
        except (ValueError, KeyError, TypeError) as exc:
            raise VectorFileError("damaged header") from exc
        payload = np.frombuffer(fh.read(), dtype=np.uint8)
    if hashlib.sha256(payload).hexdigest() != header["sha256"]:
        raise VectorFileError("checksum mismatch: the file is damaged")
    if index_id is not None and header["index_id"] != index_id:
        raise VectorFileError(f"it belongs to another index ({header['index_id'] or 'no id'}, not {index_id})")
    if header["generation"] != generation:
        raise VectorFileError(f"its header says generation {header['generation']}, its name {generation}")
    if dim is not None and header["dim"] != dim:
        raise VectorFileError(f"{header['dim']}-d vectors, the catalog's are {dim}-d")
    return payload, header


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
        self._ivf = _ivf(index)
        #: ids -> their exact vectors (one row per id; zeros for unknown ids); needed for IVF.
        self.fetch: Callable[[np.ndarray], np.ndarray] | None = None

    @classmethod
    def empty(cls, dim: int, factory: str = DEFAULT_FACTORY) -> VectorIndex:
        return cls(_make(factory, dim))

    @classmethod
    def load(cls, folder: Path, index_id: str | None = None, dim: int | None = None) -> VectorIndex | None:
        """Load the newest saved file in ``folder``; ``None`` when there is none or it cannot be trusted.

        A file is used only when its header's checksum matches its contents and
        its identity, generation, dimension and count match (``index_id``/``dim``:
        those of the catalog, when given); otherwise a warning says so and the
        caller rebuilds the vectors from the catalog.
        """
        faiss = _faiss()
        for _ in range(3):  # a writer may delete the file between listing and reading it
            found = latest_vector_file(folder)
            if found is None:
                return None
            try:
                payload, header = read_vector_file(found[0], found[1], index_id, dim)
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
        return _describe(self._index)

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
        return int(_faiss().serialize_index(self._index).nbytes)

    def ids(self) -> np.ndarray:
        """The ids of every stored vector (sorted; cached until the next change)."""
        if self._sorted_ids is None:
            self._sorted_ids = np.sort(self._stored_ids())
        return self._sorted_ids

    def _stored_ids(self) -> np.ndarray:
        faiss = _faiss()
        if self._ivf is None:
            return faiss.vector_to_array(self._index.id_map).astype(np.int64)
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
        return have[pos] == ids

    def reconstruct(self, image_id: int) -> np.ndarray:
        return self.vectors(np.array([image_id], dtype=np.int64))[0]

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        """The stored vectors of ``ids`` (each must be present), one row per id."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self._ivf is not None:
            if self.fetch is None:
                raise RuntimeError("an IVF vector index needs a fetch function to give back vectors")
            return np.asarray(self.fetch(ids), dtype=np.float32).reshape(len(ids), self.dim)
        return self._index.reconstruct_batch(ids)

    def all_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of everything stored, in storage order."""
        ids = self._stored_ids()
        if len(ids) == 0:
            return ids, np.zeros((0, self.dim), dtype=np.float32)
        if self._ivf is not None:
            return ids, self.vectors(ids)
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

    def _params(self, k: int, sel: Any = None, share: float = 1.0) -> Any:
        """Search parameters: the selector, and for IVF enough lists for ``k`` results.

        IVF probes its tuned ``nprobe`` lists; a restriction to a ``share`` of the
        vectors probes ``1/share`` times more (the same expected number of
        eligible vectors), and a large ``k`` probes lists holding ~2k vectors, so a
        filter or a long result list does not come back short.
        """
        faiss = _faiss()
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
        faiss = _faiss()
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
        scores, ids = self._index.search(queries, k, params=params)
        if self._ivf is None or params is None:
            return scores, ids
        nlist, nprobe = int(self._ivf.nlist), int(params.nprobe)
        short = np.flatnonzero((ids < 0).any(axis=1))
        while len(short) and nprobe < nlist:
            nprobe = min(nlist, 2 * nprobe)
            params.nprobe = nprobe
            more_scores, more_ids = self._index.search(queries[short], k, params=params)
            scores[short], ids[short] = more_scores, more_ids
            short = short[(more_ids < 0).any(axis=1)]
        return scores, ids

    # -- one query, optionally restricted to candidate ids --------------------

    def _selector_params(self, candidates: np.ndarray, k: int) -> Any:
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
            _, scores, ids = self._index.range_search(q, radius, params=params)
            ids = ids.astype(np.int64)
        keep = scores >= min_score
        scores, ids = scores[keep], ids[keep]
        order = np.lexsort((ids, -scores))
        return scores[order].astype(np.float32), ids[order]

    def save(self, folder: Path, index_id: str = "") -> Path:
        """Write atomically as ``vectors-<generation>.faiss`` and drop older files.

        The file starts with a header: ``index_id`` (the catalog's identity), the
        generation, dimension, vector count and the SHA-256 of the FAISS data.
        """
        faiss = _faiss()
        final = folder / f"vectors-{self.generation:012d}.faiss"
        tmp = folder / f".{final.name}.{os.getpid()}.tmp"
        for leftover in folder.glob(".vectors-*.tmp"):  # of a killed writer (there is one writer at a time)
            leftover.unlink(missing_ok=True)
        try:
            payload = faiss.serialize_index(self._index)
            header = {"index_id": index_id, "generation": self.generation, "dim": self.dim, "count": self.ntotal,
                      "sha256": hashlib.sha256(payload).hexdigest()}
            with open(tmp, "wb") as fh:
                fh.write(VECTOR_MAGIC + json.dumps(header).encode() + b"\n")
                fh.write(memoryview(payload))
                fh.flush()
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
