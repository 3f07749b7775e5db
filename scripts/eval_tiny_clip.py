#!/usr/bin/env python3
"""Measure text-to-image precision@10 of a model on held-out synthetic shapes.

Generates images from a seed the trainer never used, indexes them through the
real pipeline (``searchindex.Index``: decode, encode, SQLite, FAISS), then runs
"a photo of a {color} {shape}" for every colour and shape.  A result is relevant
when its colour and shape both match.  Prints one line per query and the mean.

    python scripts/eval_tiny_clip.py            # tiny-shapes, 1,000 images, seed 2026
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from evalargs import held_out_parser  # noqa: E402

from searchindex import Index  # noqa: E402
from searchindex.demo.synthetic import COLORS, SHAPES, write_dataset  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap: argparse.ArgumentParser = held_out_parser(__doc__)
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        labels = {}
        for row in write_dataset(folder, count=args.count, seed=args.seed, size=64):
            labels[str((folder / row["file"]).absolute())] = row
        t0 = time.perf_counter()
        with Index.create(Path(tmp) / "idx", model=args.model, pretrained=args.pretrained, device="cpu") as index:
            summary = index.add_folder(folder)
            rows = []
            for color in COLORS:
                for shape in SHAPES:
                    results = index.search(f"a photo of a {color} {shape}", k=args.k)
                    hits = sum(labels[r.path]["color"] == color and labels[r.path]["shape"] == shape
                               for r in results)
                    relevant = sum(r["color"] == color and r["shape"] == shape for r in labels.values())
                    rows.append((color, shape, hits / args.k, relevant))
        seconds = time.perf_counter() - t0
    mean = sum(p for _, _, p, _ in rows) / len(rows)
    if args.json:
        print(json.dumps({"model": args.model, "images": summary.indexed, "seed": args.seed, "k": args.k,
                          "mean_precision": round(mean, 4), "seconds": round(seconds, 1)}))
        return 0
    for color, shape, p, relevant in rows:
        print(f"a photo of a {color} {shape:<9} P@{args.k} {p:.1f}  ({relevant} relevant)")
    print(f"mean precision@{args.k} over {len(rows)} queries on {summary.indexed} held-out images "
          f"(seed {args.seed}): {mean:.3f}   [{seconds:.1f} s]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
