#!/usr/bin/env python3
"""Cold start of the CLI: `searchindex --help`, and one `searchindex search` on a 1k-image index.

Each command runs in a fresh process (what a user at a shell gets); the median of
``--runs`` runs is printed, next to a bare `python -c pass` of the same interpreter
as the baseline of this machine in this run.  Also checks that `--help` imports
neither torch nor open_clip, numpy or SQLAlchemy.

    python scripts/bench_cli.py                     # tiny-shapes, 1,000 images
    python scripts/bench_cli.py --model ViT-B-32 --pretrained none
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

ENV = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}


def timed(cmd: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, env=ENV, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="tiny-shapes")
    ap.add_argument("--pretrained", default=None)
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args(argv)

    cli = [sys.executable, "-m", "searchindex.cli"]
    probe = ("import sys, runpy; sys.argv = ['searchindex', '--help']\n"
             "try:\n    runpy.run_module('searchindex.cli', run_name='__main__')\nexcept SystemExit:\n    pass\n"
             "print(sorted(m for m in ('torch', 'open_clip', 'numpy', 'sqlalchemy', 'faiss') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", probe], env=ENV, capture_output=True, text=True, check=True)
    print(f"heavy modules imported by --help: {loaded.stdout.strip().splitlines()[-1]}")

    base = timed([sys.executable, "-c", "pass"], args.runs)
    print(f"python -c pass:          {base:.3f} s (median of {args.runs})")
    helps = timed([*cli, "--help"], args.runs)
    print(f"searchindex --help:      {helps:.3f} s ({helps - base:.3f} s above bare python)")

    from searchindex import Index
    from searchindex.synthetic import write_dataset

    with tempfile.TemporaryDirectory() as tmp:
        folder, idx = Path(tmp) / "photos", Path(tmp) / "idx"
        write_dataset(folder, count=args.count, seed=77, size=64)
        with Index.create(idx, model=args.model, pretrained=args.pretrained, device="cpu") as index:
            index.add_folder(folder)
        search = timed([*cli, "search", "a photo of a red circle", "--index", str(idx), "--device", "cpu"],
                       args.runs)
        print(f"searchindex search ({args.count} images, {args.model}): {search:.3f} s "
              f"({search - base:.3f} s above bare python)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
