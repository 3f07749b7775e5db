#!/usr/bin/env python3
"""Time a first `searchindex index` run against an unchanged re-run of the same folder.

Generates N synthetic images, runs the real CLI (`python -m searchindex.cli
index`) in a fresh process twice, and prints the wall time of both runs, their
ratio, and the re-run's JSON summary, which must show nothing indexed.  The
re-run has to stat every file and compare it with the catalog, but must not read,
decode or encode any of them (nor load the model).

    python scripts/bench_rerun.py              # 10,000 images, 64 px, tiny-shapes
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

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from searchindex.demo.synthetic import write_dataset  # noqa: E402


def _run(folder: Path, index: Path, model: str) -> tuple[float, dict]:
    cmd = [sys.executable, "-m", "searchindex.cli", "index", str(folder), "--index", str(index),
           "--model", model, "--json"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return time.perf_counter() - t0, json.loads(out.stdout)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=10_000)
    ap.add_argument("--size", type=int, default=64, help="image side in pixels")
    ap.add_argument("--model", default="tiny-shapes")
    ap.add_argument("--reruns", type=int, default=3, help="unchanged re-runs (the median is reported)")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        folder, index = Path(tmp) / "photos", Path(tmp) / "idx"
        t0 = time.perf_counter()
        write_dataset(folder, count=args.count, seed=31, size=args.size)
        print(f"generated {args.count} images of {args.size} px in {time.perf_counter() - t0:.1f} s")
        first, s1 = _run(folder, index, args.model)
        print(f"first run:      {first:8.2f} s  indexed={s1['indexed']} failed={s1['failed']}")
        times = []
        for i in range(args.reruns):
            t, s = _run(folder, index, args.model)
            times.append(t)
            print(f"unchanged re-run {i + 1}: {t:6.2f} s  indexed={s['indexed']} unchanged={s['unchanged']} "
                  f"touched={s['touched']} (library time {s['seconds']:.2f} s)")
            if s["indexed"] or s["touched"] or s["unchanged"] != args.count:
                print("error: the unchanged re-run did work it should not have", file=sys.stderr)
                return 1
        med = sorted(times)[len(times) // 2]
        print(f"median unchanged re-run {med:.2f} s = {med / first:.3f} x the first run ({first / med:.1f} x faster)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
