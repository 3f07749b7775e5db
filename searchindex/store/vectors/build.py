"""Building a vector index of a given type from the catalog's embeddings, and tuning its search.

IVF indexes are trained on a sample, filled chunk by chunk, and their ``nprobe``
tuned on the collection's own vectors (each excluded from its own answers) to
reach a recall target against exact search.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import IndexTypeError
from ...threads import faiss_call
from .index import VectorIndex
from .kinds import TUNE_QUERIES, ivf_of, make_index

__all__ = ["DEFAULT_RECALL", "NPROBES", "BuildReport", "add_shard", "add_single_threaded", "build_index",
           "merge_shards", "serialize_trained", "tune_nprobe"]

log = logging.getLogger(__name__)

#: Search parameters are tuned to reach this recall@10 against exact search.
DEFAULT_RECALL = 0.95
#: Tuning aims this far above the recall target: on 150k vectors the tuned nprobe gave
#: 0.952 on the tuning queries but 0.943 on held-out ones (scripts/bench_search.py).
TUNE_MARGIN = 0.01
#: Tuning stops trying larger nprobe values after this many seconds (keeps the best so far).
TUNE_SECONDS = 60.0
NPROBES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)


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
    shards: int = 1,
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
        shards: for IVF types, the coarse quantizer is trained once and the chunks
            are added to this many copies of the trained index in parallel threads,
            merged at the end (:func:`add_shard` and :func:`merge_shards` are the
            same steps for shards built on other machines).
    """
    index = make_index(factory, dim)
    ivf = ivf_of(index)
    sample_ids, sample_x = sample
    sample_x = np.ascontiguousarray(sample_x, dtype=np.float32)
    t0 = time.perf_counter()
    if not index.is_trained:
        if ivf is not None:
            ivf.cp.niter = 10  # k-means iterations: 10 (FAISS's default) bounds training time
        faiss_call(_train_work(index, len(sample_x), dim), index.train, sample_x)
    t_train = time.perf_counter() - t0
    tuning = ivf is not None and len(sample_x) > 0 and tune_queries > 0
    q = sample_x[:tune_queries] if tuning else np.zeros((0, dim), np.float32)
    q_ids = np.asarray(sample_ids[: len(q)], dtype=np.int64)
    top_s = np.full((len(q), 0), -np.inf, np.float32)
    top_i = np.zeros((len(q), 0), np.int64)
    t0 = time.perf_counter()
    sharded = ivf is not None and shards > 1
    parts = [_faiss().clone_index(index) for _ in range(shards)] if sharded else []
    pool = ThreadPoolExecutor(max_workers=shards, thread_name_prefix="shard") if sharded else None
    pending: list[Future[None] | None] = [None] * len(parts)
    for n_chunk, (ids, x) in enumerate(chunks):
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        x = np.ascontiguousarray(x, dtype=np.float32)
        if pool is not None:  # round robin; a shard takes its next chunk when done with the last
            slot = n_chunk % len(parts)
            waiting = pending[slot]
            if waiting is not None:
                waiting.result()
            pending[slot] = pool.submit(add_single_threaded, parts[slot], x, ids)
        else:
            faiss_call(_add_work(index, len(x), dim), index.add_with_ids, x, ids)
        if len(q):  # exact neighbours of the tuning queries: the chunk's best k+1, merged with the best so far
            s = q @ x.T
            best = np.argpartition(-s, min(k, s.shape[1] - 1), axis=1)[:, : k + 1]
            s = np.concatenate([top_s, np.take_along_axis(s, best, 1)], axis=1)
            i = np.concatenate([top_i, ids[best]], axis=1)
            keep = np.argpartition(-s, min(k, s.shape[1] - 1), axis=1)[:, : k + 1]
            top_s, top_i = np.take_along_axis(s, keep, 1), np.take_along_axis(i, keep, 1)
    if pool is not None:
        with pool:
            for f in pending:
                if f is not None:
                    f.result()
        index = merge_shards(parts)
        ivf = ivf_of(index)
    t_add = time.perf_counter() - t0
    vecs = VectorIndex(index)
    nprobe = recall = None
    t0 = time.perf_counter()
    if tuning and index.ntotal:
        order = np.argsort(-top_s, axis=1, kind="stable")
        truth = np.take_along_axis(top_i, order, 1)
        nprobe, recall = tune_nprobe(index, ivf, q, q_ids, truth, k, min(1.0, recall_target + TUNE_MARGIN),
                                      tune_seconds)
        ivf.nprobe = nprobe  # saved with the index
        vecs.nprobe = nprobe
    report = BuildReport(vecs.factory, vecs.ntotal, nprobe, recall, t_train, t_add, time.perf_counter() - t0)
    log.info("built %s", report)
    return vecs, report


def _train_work(index: Any, n: int, dim: int) -> float:
    """Multiply-adds of training ``index`` on ``n`` vectors: k-means' passes over the list centroids."""
    ivf = ivf_of(index)
    return float(n) * dim * (ivf.nlist * ivf.cp.niter if ivf is not None else 1)


def _add_work(index: Any, n: int, dim: int) -> float:
    """Multiply-adds of adding ``n`` vectors: each is compared with every list centroid (IVF)."""
    ivf = ivf_of(index)
    return float(n) * dim * (ivf.nlist if ivf is not None else 1)


def _faiss() -> Any:
    import faiss

    return faiss


def add_single_threaded(index: Any, x: np.ndarray, ids: np.ndarray) -> None:
    """Add in this thread only: each shard is one thread; FAISS's own OpenMP threads on top of
    them oversubscribe the cores (4 shards x 2 OpenMP threads took 2.5x longer than one index)."""
    faiss = _faiss()
    faiss.omp_set_num_threads(1)  # per calling thread (an OpenMP ICV), the caller's threads keep theirs
    index.add_with_ids(x, ids)


def serialize_trained(factory: str, dim: int, sample: np.ndarray) -> bytes:
    """An empty index of type ``factory`` trained on ``sample``, serialized for :func:`add_shard`."""
    index = make_index(factory, dim)
    ivf = ivf_of(index)
    if ivf is not None:
        ivf.cp.niter = 10
    if not index.is_trained:
        faiss_call(_train_work(index, len(sample), dim), index.train, np.ascontiguousarray(sample, dtype=np.float32))
    return bytes(_faiss().serialize_index(index).tobytes())


def add_shard(trained: bytes, ids: np.ndarray, vectors: np.ndarray) -> bytes:
    """A shard: the serialized trained (empty) index ``trained`` with ``vectors`` added under ``ids``.

    Pure and picklable in and out, so it runs wherever vectors are (a thread, a Ray
    task on the node that encoded them); :func:`merge_shards` joins the results.
    """
    faiss = _faiss()
    index = faiss.deserialize_index(np.frombuffer(trained, dtype=np.uint8))
    faiss_call(_add_work(index, len(vectors), int(index.d)), index.add_with_ids,
               np.ascontiguousarray(vectors, dtype=np.float32), np.ascontiguousarray(ids, dtype=np.int64))
    return bytes(faiss.serialize_index(index).tobytes())


def merge_shards(shards: Sequence[Any]) -> Any:
    """One IVF index holding every shard's vectors (FAISS ``merge_from``; ids kept).

    ``shards``: FAISS indexes or their serialized bytes, all from the same trained
    index.  Each shard's inverted lists are moved into the first, so peak memory is
    about one copy of the data.

    Raises:
        IndexTypeError: the shards are not IVF indexes.
    """
    faiss = _faiss()
    parts = [faiss.deserialize_index(np.frombuffer(p, dtype=np.uint8)) if isinstance(p, bytes) else p
             for p in shards]
    first = parts[0]
    target = ivf_of(first)
    if target is None:
        raise IndexTypeError("only IVF indexes can be built from shards")
    for part in parts[1:]:
        target.merge_from(ivf_of(part), 0)
    first.ntotal = target.ntotal
    return first


def _recall_without_self(found: np.ndarray, truth: np.ndarray, self_ids: np.ndarray, k: int) -> float:
    hits = 0
    for f, t, me in zip(found, truth, self_ids, strict=True):
        hits += len(set(f[f != me][:k].tolist()) & set(t[t != me][:k].tolist()))
    return hits / (k * len(self_ids))


def tune_nprobe(
    index: Any, ivf: Any, q: np.ndarray, q_ids: np.ndarray, truth: np.ndarray, k: int, target: float,
    seconds: float,
) -> tuple[int, float]:
    """The smallest nprobe reaching ``target`` recall@k (or the best tried within ``seconds``)."""
    t_end = time.perf_counter() + seconds
    best = (1, 0.0)
    for nprobe in [p for p in NPROBES if p < ivf.nlist] + [ivf.nlist]:
        ivf.nprobe = nprobe
        _, found = faiss_call(len(q) * (ivf.nlist + nprobe * index.ntotal / ivf.nlist) * index.d, index.search,
                              q, k + 1)
        recall = _recall_without_self(found, truth, q_ids, k)
        best = (nprobe, recall)
        if recall >= target:
            return best
        if time.perf_counter() > t_end:
            log.warning("nprobe tuning stopped after %.0f s at nprobe=%d (recall@%d %.3f < %.2f)",
                        seconds, nprobe, k, recall, target)
            break
    return best


