#!/usr/bin/env python3
"""Write seeded synthetic shape scenes and their labels.

Each image shows one shape (circle, square, triangle, star, cross) in one of 8
colours and 2 sizes on one of 4 textured backgrounds.  ``labels.jsonl`` holds
one object per image: file, shape, color, size, background, caption.

    python scripts/make_shapes.py out/ --count 1000 --seed 7 [--size 64] [--format png|jpeg]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from searchindex.demo.synthetic import write_dataset  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    ap.add_argument("--format", choices=["png", "jpeg"], default="png")
    args = ap.parse_args(argv)
    labels = write_dataset(args.out_dir, count=args.count, seed=args.seed, size=args.size, fmt=args.format)
    print(f"wrote {len(labels)} images and labels.jsonl to {args.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
