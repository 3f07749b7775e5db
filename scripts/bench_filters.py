#!/usr/bin/env python3
"""Latency of filtered searches next to unfiltered ones on a large synthetic index.

Writes an index of N synthetic rows (real catalog, real FAISS; vectors are
random unit vectors, no model: ``tests/support/vectors.py``),
then times ``Index.search_vector`` for random queries: unfiltered, filtered to
one folder of 100 (1 % of the index, a ``--path`` glob), to one of 1,000 folders
(0.1 %), and by ``min_width`` (about 25 %).  Every filtered answer is checked
against a brute-force ranking of the matching vectors.  ``--sweep`` also times
the two restricted-search strategies (scoring the candidates' vectors directly,
and FAISS's id-selector scan) at several selectivities, the basis of
``searchindex.store.vectors.index.GATHER_MAX``.

    python scripts/bench_filters.py                   # 100,000 x 512-d
    python scripts/bench_filters.py --count 20000 --dim 64
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from searchindex import Filters, Index  # noqa: E402
from tests.support.vectors import write_vector_index  # noqa: E402


def _time(fn, repeats: int) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    out = fn()  # warm-up (and the answer to check)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=100_000, help="vectors in the index")
    ap.add_argument("--dim", type=int, default=512, help="vector size (ViT-B-32: 512)")
    ap.add_argument("--queries", type=int, default=20, help="random queries per case")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per query (median reported)")
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--index", type=Path, default=None, help="keep the synthetic index here (reused if present)")
    ap.add_argument("--sweep", action="store_true", help="also time both restricted-search strategies")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        path = args.index or Path(tmp) / "synthetic.idx"
        if not Index.exists(path):
            t0 = time.perf_counter()
            write_vector_index(path, args.count, args.dim, seed=0, folders=100)
            print(f"wrote {args.count} rows in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        with Index.open(path) as index:
            t0 = time.perf_counter()
            vecs = index.vectors.current()  # load the vectors once, outside the timings
            ids, x = vecs.all_vectors()
            print(f"loaded {vecs.ntotal} vectors in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
            rng = np.random.default_rng(1)
            queries = rng.standard_normal((args.queries, args.dim)).astype(np.float32)
            queries /= np.linalg.norm(queries, axis=1, keepdims=True)
            cases = {
                "unfiltered": None,
                "path glob, 1 folder of 100 (1 %)": Filters(paths=("/synthetic/f07/*",)),
                "path glob, 1 folder of 100 + exclude half (0.5 %)": Filters(
                    paths=("/synthetic/f07",), exclude=("*/img_????[0-4]??.jpg",)),
                "date range of 36 days (1 %)": Filters(after="2021-03-01", before="2021-04-06"),
                "camera 'nikon' (~14 %)": Filters(cameras=("nikon",)),
                "near Paris, 30 km (~7 %)": Filters(near=(48.8566, 2.3522), radius_km=30),
                "min_width 4000 (~25 %)": Filters(min_width=4000),
            }
            results: dict[str, dict[str, float]] = {}
            for name, filters in cases.items():
                matching = None
                sql_ms = 0.0
                if filters is not None:
                    sql_ms, matching = _time(lambda f=filters: index.catalog.read.filtered_ids(f), args.repeats)
                per_query = []
                for q in queries:
                    ms, got = _time(lambda q=q, f=filters: index.search_vector(q, args.k, filters=f), args.repeats)
                    per_query.append(ms)
                    # Brute force over the matching vectors only.
                    mask = np.ones(len(ids), bool) if matching is None else np.isin(ids, matching)
                    scores = x[mask] @ q
                    top = np.sort(scores)[::-1][: args.k]
                    got_scores = np.array([r.score for r in got])  # type: ignore[attr-defined]
                    assert len(got_scores) == len(top) and np.allclose(got_scores, top, atol=1e-4), name
                results[name] = {
                    "matching": int(len(ids) if matching is None else len(matching)),  # type: ignore[arg-type]
                    "median_ms": statistics.median(per_query),
                    "sql_ms": sql_ms,
                }
            sweep = []
            if args.sweep:
                import searchindex.store.vectors.index as vmod

                for frac in (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25):
                    cand = np.sort(rng.choice(ids, max(1, int(len(ids) * frac)), replace=False))
                    q = queries[0]
                    saved = vmod.GATHER_MAX
                    try:
                        vmod.GATHER_MAX = 1 << 62
                        gather_ms, _ = _time(lambda c=cand, q=q: vecs.top_k(q, args.k, c), args.repeats)
                        vmod.GATHER_MAX = -1
                        select_ms, _ = _time(lambda c=cand, q=q: vecs.top_k(q, args.k, c), args.repeats)
                    finally:
                        vmod.GATHER_MAX = saved
                    sweep.append({"candidates": len(cand), "gather_ms": gather_ms, "selector_ms": select_ms})
    report = {"count": args.count, "dim": args.dim, "k": args.k, "cases": results, "sweep": sweep}
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{args.count} vectors x {args.dim}-d, top-{args.k}, median of {args.queries} queries "
          f"x {args.repeats} runs (all answers equal brute force over the matching vectors):")
    for name, r in results.items():
        sql = f"  (of which SQL {r['sql_ms']:.2f} ms)" if r["sql_ms"] else ""
        print(f"  {name:<52} {r['matching']:>7} match  {r['median_ms']:7.2f} ms{sql}")
    for row in sweep:
        print(f"  restricted to {row['candidates']:>6} ids: direct scoring {row['gather_ms']:6.2f} ms, "
              f"id-selector scan {row['selector_ms']:6.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
