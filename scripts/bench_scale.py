"""Sharded IVF build against the single-process build, on N random unit vectors (default 1M x 512).

The coarse quantizer (and codec) is trained once, here, on a sample
(``searchindex.vectors.serialize_trained``); then whole child processes, alternating,
fill it with every vector: ``single`` adds them to one index
(``build_index(shards=1)``'s add step), ``sharded`` adds them to S copies in S
threads and merges them (``build_index(shards=S)``: ``add_shard`` + ``merge_shards``).
Each child saves its top-k answers to held-out queries; the parent compares them
with exact search (recall@k of each build) and with each other (overlap), and
prints times, ratios and the load average.

    python scripts/bench_scale.py [--n 1000000] [--dim 512] [--shards 4] [--rounds 1] [--nprobe 32]

``--memory`` instead measures the memory of each index type the 100M plan weighs
(docs/scaling.md): FAISS's serialized size (what it holds in RAM) divided by the
vectors, for Flat, IVF-SQfp16/SQ8/PQ at N and HNSW at ``--hnsw-n`` (its per-vector
cost does not depend on N; building it at 1M takes hours on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from searchindex.store.vectors.build import serialize_trained  # noqa: E402
from searchindex.store.vectors.kinds import choose_factory, train_size  # noqa: E402

CHUNK = 50_000


def _vectors(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.empty((n, dim), np.float32)
    for start in range(0, n, CHUNK):  # in chunks: float64 normals of 1M x 512 would need 4 GB
        part = rng.standard_normal((min(CHUNK, n - start), dim), dtype=np.float32)
        x[start:start + len(part)] = part / np.linalg.norm(part, axis=1, keepdims=True)
    return x


def _child(args: argparse.Namespace) -> None:
    import faiss

    from searchindex.store.vectors.build import add_single_threaded, merge_shards

    x = _vectors(args.n, args.dim, args.seed)
    q = _vectors(args.queries, args.dim, args.seed + 1)
    trained = Path(args.trained).read_bytes()
    ids = np.arange(args.n, dtype=np.int64)
    t0 = time.perf_counter()
    if args.child == "single":
        index = faiss.deserialize_index(np.frombuffer(trained, np.uint8))
        for start in range(0, args.n, CHUNK):
            index.add_with_ids(x[start:start + CHUNK], ids[start:start + CHUNK])
    else:  # the same steps as build_index(shards=S): round-robin chunks to S trained copies, then merge
        from concurrent.futures import ThreadPoolExecutor

        parts = [faiss.deserialize_index(np.frombuffer(trained, np.uint8)) for _ in range(args.shards)]
        with ThreadPoolExecutor(args.shards) as pool:
            def fill(part: object, k: int) -> None:
                for c in range(k * CHUNK, args.n, args.shards * CHUNK):
                    add_single_threaded(part, x[c:c + CHUNK], ids[c:c + CHUNK])

            futures = [pool.submit(fill, part, k) for k, part in enumerate(parts)]
            for f in futures:
                f.result()
        index = merge_shards(parts)
    seconds = time.perf_counter() - t0
    faiss.extract_index_ivf(index).nprobe = args.nprobe
    _, found = index.search(q, args.k)
    np.save(args.out, found)
    print(json.dumps({"mode": args.child, "add_s": seconds, "ntotal": int(index.ntotal)}))


MEMORY_TYPES = ("IDMap2,Flat", "IVF4096,SQfp16", "IVF4096,SQ8", "IVF4096,PQ64", "IVF4096,PQ32")
HNSW_TYPES = ("IDMap2,HNSW32,Flat", "IDMap2,HNSW32,SQ8")


def _memory(args: argparse.Namespace) -> None:
    import faiss

    print(f"bytes per vector (serialized FAISS index / vectors), {args.dim}-d random unit vectors; "
          f"load average {os.getloadavg()[0]:.2f}")
    x = _vectors(args.n, args.dim, args.seed)
    ids = np.arange(args.n, dtype=np.int64)
    for factory, n in [(f, args.n) for f in MEMORY_TYPES] + [(f, args.hnsw_n) for f in HNSW_TYPES]:
        index = faiss.index_factory(args.dim, factory, faiss.METRIC_INNER_PRODUCT)
        t0 = time.perf_counter()
        if not index.is_trained:
            try:
                faiss.extract_index_ivf(index).cp.niter = 4  # memory does not depend on training quality
            except RuntimeError:
                pass
            index.train(x[: min(n, 40_000)])  # 10 a list: enough to fill every list
        for start in range(0, n, CHUNK):
            index.add_with_ids(x[start:min(n, start + CHUNK)], ids[start:min(n, start + CHUNK)])
        size = faiss.serialize_index(index).nbytes
        print(f"  {factory:<22} n={n:>9,}  {size / n:8.1f} B/vector  ({size / 2**20:8.1f} MiB, "
              f"built in {time.perf_counter() - t0:.0f} s)")
        del index


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="vectors (default 1M)")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--shards", type=int, default=2, help="shards (threads) of the sharded build")
    ap.add_argument("--rounds", type=int, default=1, help="alternating rounds of both builds")
    ap.add_argument("--factory", default=None, help="default: the policy's choice for N vectors")
    ap.add_argument("--nprobe", type=int, default=32, help="IVF lists probed when comparing answers")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--memory", action="store_true", help="measure bytes per vector per index type instead")
    ap.add_argument("--hnsw-n", type=int, default=100_000, help="vectors of the HNSW memory measurement")
    ap.add_argument("--child", choices=["single", "sharded"], help=argparse.SUPPRESS)
    ap.add_argument("--trained", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args)
        return
    if args.memory:
        _memory(args)
        return
    factory = args.factory or choose_factory(args.n, args.dim)
    if not factory.startswith("IVF"):
        ap.error(f"{factory} is not an IVF type (the policy picks IVF from 100k vectors; give --factory IVF...)")
    print(f"{args.n} random unit vectors x {args.dim}, {factory}, {args.shards} shards; "
          f"load average before: {os.getloadavg()[0]:.2f}, CPUs: {os.cpu_count()}")
    x = _vectors(args.n, args.dim, args.seed)
    q = _vectors(args.queries, args.dim, args.seed + 1)
    rng = np.random.default_rng(args.seed)
    sample = x[rng.choice(args.n, train_size(factory, args.n), replace=False)]
    t0 = time.perf_counter()
    trained = serialize_trained(factory, args.dim, sample)
    train_s = time.perf_counter() - t0
    print(f"trained once on {len(sample)} vectors: {train_s:.1f} s")
    truth = np.zeros((len(q), args.k), np.int64)  # exact top-k, chunk by chunk
    best = np.full((len(q), 0), -np.inf, np.float32)
    for start in range(0, args.n, CHUNK):
        s = np.concatenate([best, q @ x[start:start + CHUNK].T], axis=1)
        i = np.concatenate([truth[:, : best.shape[1]], np.arange(start, start + min(CHUNK, args.n - start))[None]
                            .repeat(len(q), 0)], axis=1)
        keep = np.argsort(-s, axis=1)[:, : args.k]
        best, truth = np.take_along_axis(s, keep, 1), np.take_along_axis(i, keep, 1)
    del x
    times: dict[str, list[float]] = {"single": [], "sharded": []}
    found: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "trained.faiss").write_bytes(trained)
        for r in range(args.rounds):
            for mode in ("single", "sharded") if r % 2 == 0 else ("sharded", "single"):
                out = Path(tmp) / f"{mode}.npy"
                cmd = [sys.executable, __file__, "--child", mode, "--trained", str(Path(tmp) / "trained.faiss"),
                       "--out", str(out), "--n", str(args.n), "--dim", str(args.dim), "--shards",
                       str(args.shards), "--nprobe", str(args.nprobe), "--queries", str(args.queries),
                       "--k", str(args.k), "--seed", str(args.seed)]
                done = subprocess.run(cmd, capture_output=True, text=True)
                if done.returncode:
                    sys.exit(f"{mode} build failed:\n{done.stderr}")
                res = json.loads(done.stdout)
                times[mode].append(res["add_s"])
                found[mode] = np.load(out)
                print(f"round {r + 1} {mode:>7}: add {res['add_s']:.1f} s ({res['ntotal']} vectors), "
                      f"load {os.getloadavg()[0]:.2f}")

    def recall(f: np.ndarray) -> float:
        return float(np.mean([len(set(a) & set(b)) / args.k for a, b in zip(f, truth, strict=True)]))

    single, sharded = min(times["single"]), min(times["sharded"])
    overlap = np.mean([len(set(a) & set(b)) / args.k for a, b in zip(found["single"], found["sharded"],
                                                                    strict=True)])
    print(f"best of {args.rounds}: single {single:.1f} s, sharded ({args.shards}) {sharded:.1f} s, "
          f"ratio sharded/single {sharded / single:.2f}; with training: {train_s + single:.1f} s vs "
          f"{train_s + sharded:.1f} s")
    print(f"recall@{args.k} at nprobe {args.nprobe}: single {recall(found['single']):.3f}, "
          f"sharded {recall(found['sharded']):.3f}; top-{args.k} overlap between them {overlap:.3f}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
