#!/usr/bin/env python3
"""Cold start of the CLI: `searchindex --help`, and `searchindex search` on a 1k-image index.

Each command runs in a fresh process (what a user at a shell gets); the median of
``--runs`` runs is printed, next to a bare `python -c pass` of the same interpreter
as the baseline of this machine in this run.  Three kinds of cold search are
timed, their runs interleaved so that load on the machine hits them alike:

- ``first-time query, onnx``: a query never seen before, encoded by the ONNX
  Runtime text tower (exported when the index was built) -- no torch import;
- ``repeated query``: a query already in the index's query cache -- no model at all;
- ``first-time query, full model``: ``SEARCHINDEX_TEXT_BACKEND=torch``, the baseline of the
  ratios: the index's full model is loaded to encode the text (a new query each time, so the
  cache never answers).  Where the model's int8 image tower is prepared in the model cache,
  that model is the prepared ONNX one and imports no torch either; otherwise it is the
  open_clip model under torch, the path before the ONNX text tower.

Also checks which heavy modules `--help` and a cold search import.

    python scripts/bench_cli.py                     # tiny-shapes, 1,000 images
    python scripts/bench_cli.py --model ViT-B-32 --pretrained none
    python scripts/bench_cli.py --index PATH        # time searches on an existing index
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
HEAVY = ("torch", "open_clip", "onnxruntime", "numpy", "sqlalchemy", "faiss")


def run_once(cmd: list[str], env: dict[str, str] | None = None) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env or ENV, check=True, capture_output=True)
    return time.perf_counter() - t0


def timed(cmd: list[str], runs: int) -> float:
    return statistics.median(run_once(cmd) for _ in range(runs))


def imported_by(argv: list[str]) -> list[str]:
    """The heavy modules a fresh CLI process imports for ``argv``."""
    probe = (f"import sys, runpy; sys.argv = ['searchindex', *{argv!r}]\n"
             "try:\n    runpy.run_module('searchindex.cli', run_name='__main__')\nexcept SystemExit:\n    pass\n"
             f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], env=ENV, capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def time_searches(cli: list[str], index: Path, runs: int, base: float) -> None:
    search = [*cli, "search", "--index", str(index), "--device", "cpu", "-k", "10"]
    torch_env = {**ENV, "SEARCHINDEX_TEXT_BACKEND": "torch"}
    stamp = time.time_ns()
    repeated = "a photo of a red circle"
    # Warm-up: exports the text tower if the index was built elsewhere, caches the repeated query.
    run_once([*search, repeated])
    print(f"cold search imports: {imported_by(['search', '--index', str(index), '--device', 'cpu', 'x' + str(stamp)])}")
    times: dict[str, list[float]] = {"onnx": [], "repeat": [], "torch": []}
    for i in range(runs):
        times["onnx"].append(run_once([*search, f"a photo of a thing {stamp} {i}"]))
        times["repeat"].append(run_once([*search, repeated]))
        times["torch"].append(run_once([*search, f"a picture of a thing {stamp} {i}"], torch_env))
    med = {k: statistics.median(v) for k, v in times.items()}
    for key, label in (("onnx", "first-time query, onnx "), ("repeat", "repeated query (cache)"),
                       ("torch", "first-time query, full model")):
        print(f"search, {label}: {med[key]:.3f} s ({med[key] - base:.3f} s above bare python; "
              f"full model / this = {med['torch'] / med[key]:.2f}x)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="tiny-shapes")
    ap.add_argument("--pretrained", default=None)
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--index", type=Path, default=None, help="time searches on this existing index (no build)")
    args = ap.parse_args(argv)

    cli = [sys.executable, "-m", "searchindex.cli"]
    print(f"heavy modules imported by --help: {imported_by(['--help'])}")

    base = timed([sys.executable, "-c", "pass"], args.runs)
    print(f"python -c pass:          {base:.3f} s (median of {args.runs})")
    helps = timed([*cli, "--help"], args.runs)
    print(f"searchindex --help:      {helps:.3f} s ({helps - base:.3f} s above bare python)")

    if args.index is not None:
        time_searches(cli, args.index, args.runs, base)
        return 0

    from searchindex import Index
    from searchindex.demo.synthetic import write_dataset

    with tempfile.TemporaryDirectory() as tmp:
        folder, idx = Path(tmp) / "photos", Path(tmp) / "idx"
        write_dataset(folder, count=args.count, seed=77, size=64)
        with Index.create(idx, model=args.model, pretrained=args.pretrained, device="cpu") as index:
            index.add_folder(folder)
        print(f"index: {args.count} images, {args.model}")
        time_searches(cli, idx, args.runs, base)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
