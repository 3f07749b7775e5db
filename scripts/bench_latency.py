#!/usr/bin/env python3
"""Warm end-to-end text-query latency of ``Index.search`` on a large index.

Builds (or reuses, with ``--index``) an index of N catalog rows whose embeddings
are synthetic clustered 512-d unit vectors, written through the catalog's batch
API with fake paths; the FAISS index (``--factory``, trained on a sample) is
written beside it for the catalog's generation, so opening it needs no catch-up.
Then one ``Index`` answers ``--queries`` distinct texts with the model's text
tower (ViT-B-32 random init by default): p50/p95 of the whole ``Index.search``
call, split into text encoding, FAISS search and the catalog join; then the same
texts again, answered from the query cache.  Each text backend in
``--backends`` (ONNX Runtime, torch) gets a fresh ``Index``.

    python scripts/bench_latency.py                      # 1,000,000 rows, IVF4096,SQ8, nprobe 4
    python scripts/bench_latency.py --n 100000 --index /tmp/lat.idx
    python scripts/bench_latency.py --n 1000 --factory IDMap2,Flat --policy-ab   # thread policy off/on

``--policy-ab`` times the thread policy of :mod:`searchindex.threads` against no
policy (``SEARCHINDEX_THREADS=off``) in one process, alternating query by query
between two ``Index`` objects (one per setting, as a text session's spinning is
fixed when it is made): warm text queries, batch searches of ``--batch`` queries,
and building a FAISS index of ``--build`` of the index's vectors (train + add).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from searchindex import Index  # noqa: E402
from searchindex.models.backends import load_encoder  # noqa: E402
from searchindex.models.onnx import export_text_tower  # noqa: E402
from searchindex.models.spec import resolve_model  # noqa: E402
from searchindex.store.catalog.database import Catalog  # noqa: E402
from searchindex.store.catalog.records import NewImage  # noqa: E402
from searchindex.store.vectors.file import latest_vector_file  # noqa: E402

ADJECTIVES = ["red", "blue", "green", "old", "small", "tall", "happy", "dark", "bright", "wooden"]
NOUNS = ["car", "dog", "cat", "house", "tree", "boat", "child", "mountain", "beach", "bicycle",
         "bridge", "flower", "city street", "kitchen", "horse", "bird", "train", "lake", "guitar", "cake"]


def queries(n: int, salt: str = "") -> list[str]:
    """``n`` distinct, photo-search-like texts."""
    out = [f"a photo of a {a} {b}{salt}" for a in ADJECTIVES for b in NOUNS]
    out += [f"a picture of the {a} {b}{salt}" for a in ADJECTIVES for b in NOUNS]
    if n > len(out):
        out += [f"{t} number {i}" for i, t in enumerate(out[: n - len(out)])]
    return out[:n]


def build(path: Path, n: int, dim: int, factory: str, nprobe: int, model: str, pretrained: str | None,
          seed: int = 0, batch: int = 20_000) -> None:
    """Catalog rows with clustered unit vectors, then the trained FAISS index saved for that generation."""
    spec = resolve_model(model, pretrained)
    path.mkdir(parents=True, exist_ok=True)
    catalog = Catalog.create(path, spec, dim, factory)
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((1024, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    vectors = np.empty((n, dim), dtype=np.float32)
    t0 = time.perf_counter()
    for start in range(0, n, batch):
        stop = min(n, start + batch)
        v = centres[rng.integers(0, len(centres), stop - start)]
        v = v + rng.standard_normal((stop - start, dim)).astype(np.float32) * (1.2 / np.sqrt(dim))
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        vectors[start:stop] = v
        catalog.commit_batch([NewImage(f"/synthetic/f{i % 100:02d}/img_{i:07d}.jpg", 100_000 + i, i, f"{i:064x}",
                                       1024, 768, "JPEG", v[i - start]) for i in range(start, stop)])
    catalog.close()
    print(f"wrote {n:,} catalog rows in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    build_vectors(path, factory, nprobe, vectors, np.arange(1, n + 1, dtype=np.int64))  # a fresh catalog: 1..n


def build_vectors(path: Path, factory: str, nprobe: int, vectors: np.ndarray | None = None,
                  ids: np.ndarray | None = None) -> None:
    """Train and fill the FAISS index (from the catalog when no vectors are given) and save it."""
    import faiss

    from searchindex.store.vectors.index import VectorIndex

    t0 = time.perf_counter()
    catalog = Catalog.open(path)
    meta = catalog.read.meta()
    dim, generation, index_id = int(meta["dim"]), catalog.read.generation(), meta["index_id"]
    if vectors is None:
        chunks = list(catalog.read.embeddings_since(0, dim))
        ids = np.concatenate([c[0] for c in chunks]).astype(np.int64)
        vectors = np.concatenate([c[1] for c in chunks])
    catalog.close()
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        ivf = faiss.extract_index_ivf(index)
        ivf.cp.niter = 10  # k-means on 2 cores: a coarser quantizer, built in minutes rather than an hour
        sample = np.random.default_rng(1).choice(len(vectors), min(len(vectors), 16 * ivf.nlist), replace=False)
        index.train(vectors[np.sort(sample)])
    index.add_with_ids(vectors, ids)
    _set_nprobe(index, nprobe)
    VectorIndex(index, generation).save(path, index_id)  # the catalog's identity: else the file is not used
    print(f"FAISS {factory} over {len(vectors):,} vectors in {time.perf_counter() - t0:.0f} s", file=sys.stderr)


def _set_nprobe(index: Any, nprobe: int) -> None:
    import faiss

    try:
        faiss.extract_index_ivf(index).nprobe = nprobe
    except RuntimeError:  # not an IVF index
        pass


class Stopwatch:
    """Wraps a callable and keeps the duration of its last call (seconds)."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.last = 0.0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.last += time.perf_counter() - t0


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1000, q))


def measure(path: Path, texts: list[str], backend: str, nprobe: int, k: int) -> None:
    os.environ["SEARCHINDEX_TEXT_BACKEND"] = backend
    with Index.open(path, device="cpu") as index:
        vecs = index.vectors.current()
        vecs.nprobe = nprobe  # no effect on an exact index
        # Time the three stages inside the real Index.search call (instance attributes shadow methods).
        encode = Stopwatch(index.models.encode_texts)
        index.models.encode_texts = encode  # type: ignore[method-assign]
        # The join: what the results read from the catalog (rows, tags, captions, keywords).
        read = index.catalog.read
        joins = [Stopwatch(read.records), Stopwatch(read.tags), Stopwatch(read.captions), Stopwatch(read.texts)]
        read.records, read.tags, read.captions, read.texts = joins  # type: ignore[method-assign]
        search = Stopwatch(vecs.top_k)
        vecs.top_k = search  # type: ignore[method-assign]
        t0 = time.perf_counter()
        index.search(f"warm-up query {time.time_ns()}", k=k)  # a new text: loads the text model
        print(f"[{backend}] text model load + first query: {time.perf_counter() - t0:.2f} s")
        for label, batch in (("new queries", texts), ("cached queries", texts)):
            rows: dict[str, list[float]] = {"total": [], "encode": [], "search": [], "join": []}
            short = 0
            for text in batch:
                for w in (encode, search, *joins):
                    w.last = 0.0
                t0 = time.perf_counter()
                hits = index.search(text, k=k)
                rows["total"].append(time.perf_counter() - t0)
                rows["encode"].append(encode.last)
                rows["search"].append(search.last)
                rows["join"].append(sum(w.last for w in joins))
                short += len(hits) < k  # IVF: the probed lists may hold fewer than k vectors
            parts = ", ".join(f"{name} {pct(v, 50):.1f}/{pct(v, 95):.1f}" for name, v in rows.items())
            note = f"; {short} answers with fewer than {k} hits" if short else ""
            print(f"[{backend}] {label} ({len(batch)}): p50/p95 ms: {parts}{note}")


def _policy(on: bool) -> None:
    os.environ["SEARCHINDEX_THREADS"] = "on" if on else "off"


def measure_policy(path: Path, texts: list[str], nprobe: int, k: int, batch: int, build: int, rounds: int) -> None:
    """Thread policy off against on, alternating within one process (see the module's docstring)."""
    from searchindex.store.vectors.build import build_index

    os.environ["SEARCHINDEX_TEXT_BACKEND"] = "onnx"
    indexes = {}
    for on in (False, True):
        _policy(on)
        index = Index.open(path, device="cpu")
        index.vectors.current().nprobe = nprobe
        for i in range(3):  # load the text tower, then its repacked session (made under this setting)
            index.search(f"warm-up {on} {i} {time.time_ns()}", k=k)
        indexes[on] = index
    names = {False: "off", True: "on"}
    totals: dict[bool, list[float]] = {False: [], True: []}
    for i, text in enumerate(texts):
        for on in ((False, True) if i % 2 else (True, False)):
            _policy(on)
            t0 = time.perf_counter()
            indexes[on].search(f"{text} [{names[on]}]", k=k)
            totals[on].append(time.perf_counter() - t0)
    for on in (False, True):
        print(f"[policy {names[on]}] {len(texts)} new text queries: p50/p95 {pct(totals[on], 50):.1f}/"
              f"{pct(totals[on], 95):.1f} ms")
    print(f"[policy] p50 off/on: {pct(totals[False], 50) / pct(totals[True], 50):.2f}x, "
          f"p95 off/on: {pct(totals[False], 95) / pct(totals[True], 95):.2f}x")
    vecs = indexes[True].vectors.current()
    rng = np.random.default_rng(5)
    q = rng.standard_normal((batch, vecs.dim)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    searches: dict[bool, list[float]] = {False: [], True: []}
    for r in range(rounds):
        for on in ((False, True) if r % 2 else (True, False)):
            _policy(on)
            t0 = time.perf_counter()
            indexes[on].vectors.current().search(q, k)
            searches[on].append(time.perf_counter() - t0)
    med = {on: float(np.median(v)) for on, v in searches.items()}
    print(f"[policy] batch of {batch} queries, median of {rounds}: off {med[False] * 1000:.1f} ms, "
          f"on {med[True] * 1000:.1f} ms ({batch / med[False]:.0f} vs {batch / med[True]:.0f} queries/s; "
          f"on/off throughput {med[False] / med[True]:.2f}x)")
    if build:
        ids, x = indexes[True].vectors.current().all_vectors()
        pick = np.sort(rng.choice(len(ids), min(build, len(ids)), replace=False))
        ids, x = ids[pick], x[pick]
        factory = f"IVF{max(1, int(4 * np.sqrt(len(ids))))},SQfp16"
        builds: dict[bool, list[float]] = {False: [], True: []}
        for r in range(max(1, rounds // 4)):
            for on in ((False, True) if r % 2 else (True, False)):
                _policy(on)
                t0 = time.perf_counter()
                build_index(factory, vecs.dim, [(ids[s:s + 10_000], x[s:s + 10_000])
                                                for s in range(0, len(ids), 10_000)],
                            (ids, x), tune_queries=0)
                builds[on].append(time.perf_counter() - t0)
        bmed = {on: float(np.median(v)) for on, v in builds.items()}
        print(f"[policy] build {factory} from {len(ids):,} vectors (train + add), median of {len(builds[True])}: "
              f"off {bmed[False]:.2f} s, on {bmed[True]:.2f} s (on/off throughput {bmed[False] / bmed[True]:.2f}x)")
    for index in indexes.values():
        index.close()
    os.environ.pop("SEARCHINDEX_THREADS", None)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="rows in the index")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--factory", default="IVF4096,SQ8", help="FAISS index_factory string")
    ap.add_argument("--nprobe", type=int, default=4)
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--pretrained", default="none")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--backends", default="onnx,torch", help="text backends to time, comma-separated")
    ap.add_argument("--index", type=Path, default=None, help="build the index here, or reuse it if present")
    ap.add_argument("--policy-ab", action="store_true",
                    help="time the thread policy against none, alternating (instead of --backends)")
    ap.add_argument("--batch", type=int, default=256, help="--policy-ab: queries per batch search")
    ap.add_argument("--build", type=int, default=50_000, help="--policy-ab: vectors per FAISS build (0: none)")
    ap.add_argument("--rounds", type=int, default=8, help="--policy-ab: batch searches per setting")
    args = ap.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        path = args.index or Path(tmp) / "latency.idx"
        if not Index.exists(path):
            build(path, args.n, args.dim, args.factory, args.nprobe, args.model, args.pretrained)
        elif latest_vector_file(path) is None:  # a build interrupted after the catalog
            build_vectors(path, args.factory, args.nprobe)
        with Index.open(path) as index:
            rows, spec = index.count(), index.spec
        print(f"index: {rows:,} rows, {spec.describe()}, {args.factory} nprobe={args.nprobe}, k={args.k}")
        if "onnx" in args.backends:
            export_text_tower(load_encoder(spec, "cpu"))  # a no-op once exported
        texts = queries(args.queries)
        stamp = time.strftime("%H%M%S")
        if args.policy_ab:
            measure_policy(path, [f"{t} ({stamp})" for t in texts], args.nprobe, args.k, args.batch, args.build,
                           args.rounds)
            return 0
        for backend in args.backends.split(","):
            # Salted texts: no backend (and no earlier run on a reused index) finds them cached.
            measure(path, [f"{t} ({backend} {stamp})" for t in texts], backend.strip(), args.nprobe, args.k)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
