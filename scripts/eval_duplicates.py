#!/usr/bin/env python3
"""Measure near-duplicate detection: pair precision and recall, and time on a large index.

Quality: generates distinct synthetic scenes plus near-identical copies of some
(resized, recompressed, lightly cropped, brightened: ``write_duplicate_set``),
indexes them through ``searchindex.Index`` and runs ``Index.duplicates``.  A
predicted pair is any two images put in the same group; a true pair is any two
copies of the same scene (the original included).  Prints precision and recall
at the default threshold, and over a grid of thresholds for context.

Speed (``--bench N``): writes an index of N synthetic vectors (2 % of them planted
near-copies of others) and times ``Index.duplicates`` on it, with the recall of
the planted pairs.

    python scripts/eval_duplicates.py                   # tiny-shapes, 320 scenes, seed 2026
    python scripts/eval_duplicates.py --bench 100000    # timing on 100k 512-d vectors
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from searchindex import Index  # noqa: E402
from searchindex.defaults import DEFAULT_DUPLICATE_THRESHOLD  # noqa: E402
from searchindex.demo.synthetic import write_duplicate_set  # noqa: E402
from tests.support.vectors import write_vector_index  # noqa: E402


def pair_scores(groups: list[list[str]], truth: dict[str, int]) -> tuple[float, float, int, int]:
    """(precision, recall, predicted pairs, true pairs) of ``groups`` against ``truth`` (path -> scene)."""
    predicted = {frozenset(p) for g in groups for p in itertools.combinations(sorted(g), 2)}
    by_scene: dict[int, list[str]] = {}
    for path, scene in truth.items():
        by_scene.setdefault(scene, []).append(path)
    actual = {frozenset(p) for members in by_scene.values() for p in itertools.combinations(sorted(members), 2)}
    hits = len(predicted & actual)
    return (hits / len(predicted) if predicted else 1.0), (hits / len(actual) if actual else 1.0), \
        len(predicted), len(actual)


def quality(args: argparse.Namespace, base: Path) -> dict[str, object]:
    folder = base / f"dups-{args.seed}-{args.count}"
    if not (folder / "labels.jsonl").is_file():
        write_duplicate_set(folder, count=args.count, seed=args.seed)
    truth = {}
    variants: dict[str, str] = {}
    for line in (folder / "labels.jsonl").read_text().splitlines():
        row = json.loads(line)
        truth[str((folder / row["file"]).absolute())] = row["group"]
        variants[str((folder / row["file"]).absolute())] = row["variant"]
    path = base / f"dups-index-{args.seed}-{args.count}"
    index = Index.open(path, device="cpu") if Index.exists(path) else Index.create(
        path, model=args.model, device="cpu")
    rows = []
    with index:
        index.add_folder(folder)
        t0 = time.perf_counter()
        groups = index.duplicates(args.threshold)
        seconds = time.perf_counter() - t0
        p, r, n_pred, n_true = pair_scores([[im.path for im in g.images] for g in groups], truth)
        best_is_original = sum(variants[g.best.path] == "original" for g in groups)
        for thr in np.round(np.arange(0.94, 0.996, 0.005), 3):
            gp, gr, _, _ = pair_scores([[im.path for im in g.images] for g in index.duplicates(float(thr))], truth)
            rows.append({"threshold": float(thr), "precision": gp, "recall": gr})
    return {
        "model": args.model, "seed": args.seed, "scenes": args.count, "images": len(truth),
        "threshold": args.threshold, "precision": p, "recall": r, "predicted_pairs": n_pred, "true_pairs": n_true,
        "groups": len(groups), "best_copy_is_original": best_is_original, "seconds": seconds, "sweep": rows,
    }


def bench(args: argparse.Namespace, base: Path) -> dict[str, object]:
    path = base / f"vectors-{args.bench}-{args.dim}"
    planted_file = path / "planted.npy"
    if not Index.exists(path):
        planted = write_vector_index(path, args.bench, args.dim, seed=0, duplicate_fraction=0.02)
        np.save(planted_file, planted)
    planted = np.load(planted_file)
    with Index.open(path) as index:
        index.vectors.current()  # load the vectors once, outside the timing
        t0 = time.perf_counter()
        groups = index.duplicates(args.threshold)
        seconds = time.perf_counter() - t0
    group_of = {im.image_id: n for n, g in enumerate(groups) for im in g.images}
    found = sum(group_of.get(int(a), -1) == group_of.get(int(b), -2) for a, b in planted)
    return {"vectors": args.bench, "dim": args.dim, "threshold": args.threshold, "seconds": seconds,
            "groups": len(groups), "planted_pairs": len(planted), "planted_pairs_found": found}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=320, help="distinct scenes (at most 320)")
    ap.add_argument("--seed", type=int, default=2026, help="scene seed")
    ap.add_argument("--model", default="tiny-shapes")
    ap.add_argument("--threshold", type=float, default=DEFAULT_DUPLICATE_THRESHOLD)
    ap.add_argument("--bench", type=int, default=0, metavar="N", help="instead: time on N synthetic vectors")
    ap.add_argument("--dim", type=int, default=512, help="vector size for --bench")
    ap.add_argument("--keep", type=Path, default=None, help="keep generated images and indexes here (reused)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        base = args.keep or Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        result = bench(args, base) if args.bench else quality(args, base)
    if args.json:
        print(json.dumps(result))
    elif args.bench:
        print(f"duplicates over {result['vectors']} x {result['dim']}-d vectors at threshold {args.threshold}: "
              f"{result['seconds']:.1f} s, {result['groups']} groups; planted pairs found "
              f"{result['planted_pairs_found']}/{result['planted_pairs']}")
    else:
        for row in result["sweep"]:  # type: ignore[attr-defined]
            print(f"  threshold {row['threshold']:.3f}: pair precision {row['precision']:.3f}  "
                  f"recall {row['recall']:.3f}")
        print(f"{args.model}, {result['scenes']} distinct scenes + copies = {result['images']} images "
              f"(seed {args.seed}), default threshold {args.threshold}: pair precision {result['precision']:.3f}, "
              f"pair recall {result['recall']:.3f} ({result['predicted_pairs']} predicted, {result['true_pairs']} "
              f"true pairs); best copy is the original in {result['best_copy_is_original']}/{result['groups']} "
              f"groups; {result['seconds']:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
