"""Local indexing against ``--engine ray`` on a local Ray instance, and the scaling model for N nodes.

Whole ``searchindex index`` processes, alternating local / ray, each into a fresh
index of the same generated folder; prints each run's wall time and the
``add_folder`` seconds it reports, the overhead ratio ray/local (best of the
rounds), and the load average.  Then the scaling model: what one encoder worker
does (images/s of the Ray run, per worker), what the single driver can commit
(images/s of ``Catalog.commit_batch`` with precomputed vectors, measured here), and
the projected rate for N nodes = min(N x per-node rate, driver commit rate).

    python scripts/bench_distributed.py [--count 600] [--size 256] [--rounds 2] [--model tiny-shapes]
        [--pretrained P] [--ray-cpus 2] [--encoder-workers 1] [--batch-size 64] [--commit-dim 512]
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _index(folder: Path, index: Path, args: argparse.Namespace, engine: str) -> tuple[float, dict]:
    cmd = [sys.executable, "-m", "searchindex.cli", "index", str(folder), "--index", str(index), "--model",
           args.model, "--device", "cpu", "--batch-size", str(args.batch_size), "--json"]
    if args.pretrained:
        cmd += ["--pretrained", args.pretrained]
    if engine == "ray":
        cmd += ["--engine", "ray", "--ray-cpus", str(args.ray_cpus), "--encoder-workers", str(args.encoder_workers)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - t0
    if done.returncode:
        sys.exit(f"{engine} run failed:\n{done.stderr[-3000:]}")
    return wall, json.loads(done.stdout)


def _commit_rate(dim: int, n: int = 5000, batch: int = 64) -> tuple[float, float]:
    """Images/s of the driver's catalog commits with vectors already computed (no decode, no model),
    and the catalog's bytes per image."""
    from searchindex.models.spec import ModelSpec
    from searchindex.store.catalog import Catalog
    from searchindex.store.records import NewImage, PhotoMetadata

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        cat = Catalog.create(Path(tmp), ModelSpec("bench", "none"), dim, "IDMap2,Flat")
        meta = PhotoMetadata("2024-01-01T00:00:00", "mtime")
        t0 = time.perf_counter()
        for start in range(0, n, batch):
            rows = [NewImage(f"/photos/{i:08d}.jpg", 1000, i, f"{i:064x}", 640, 480, "JPEG",
                             rng.standard_normal(dim).astype(np.float32), meta) for i in range(start, start + batch)]
            cat.commit_batch(rows)
        rate = n / (time.perf_counter() - t0)
        cat.close()
        size = sum(p.stat().st_size for p in Path(tmp).glob("catalog.sqlite*"))
    return rate, size / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=600, help="generated images")
    ap.add_argument("--size", type=int, default=256, help="their side in pixels")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds (local, ray / ray, local)")
    ap.add_argument("--model", default="tiny-shapes")
    ap.add_argument("--pretrained", default=None, help="e.g. none (random weights) for open_clip architectures")
    ap.add_argument("--ray-cpus", type=int, default=2)
    ap.add_argument("--encoder-workers", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--commit-dim", type=int, default=512, help="vector size of the commit-rate measurement")
    ap.add_argument("--nodes", default="1,2,4,8,16,32,64", help="node counts of the scaling table")
    args = ap.parse_args()

    from searchindex.demo.synthetic import write_dataset

    print(f"{args.count} images of {args.size} px, model {args.model}/{args.pretrained or 'default'}, "
          f"Ray: local instance, {args.ray_cpus} CPUs, {args.encoder_workers} encoder worker(s); "
          f"CPUs here: {os.cpu_count()}, load average before: {os.getloadavg()[0]:.2f}")
    runs: dict[str, list[tuple[float, float]]] = {"local": [], "ray": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        write_dataset(folder, count=args.count, seed=4, size=args.size)
        n = 0
        for r in range(args.rounds):
            for engine in ("local", "ray") if r % 2 == 0 else ("ray", "local"):
                n += 1
                wall, summary = _index(folder, Path(tmp) / f"idx{n}", args, engine)
                if summary["indexed"] != args.count:
                    sys.exit(f"{engine} indexed {summary['indexed']} of {args.count}")
                runs[engine].append((wall, summary["seconds"]))
                print(f"round {r + 1} {engine:>5}: process {wall:6.1f} s, add_folder {summary['seconds']:6.1f} s "
                      f"({args.count / summary['seconds']:.1f} images/s), load {os.getloadavg()[0]:.2f}")
    local_wall, local_add = min(w for w, _ in runs["local"]), min(a for _, a in runs["local"])
    ray_wall, ray_add = min(w for w, _ in runs["ray"]), min(a for _, a in runs["ray"])
    print(f"best of {args.rounds}: process ray/local {ray_wall / local_wall:.2f} "
          f"(overhead {100 * (ray_wall / local_wall - 1):+.0f} %), add_folder ray/local {ray_add / local_add:.2f} "
          f"(overhead {100 * (ray_add / local_add - 1):+.0f} %)")

    per_node = args.count / ray_add
    per_worker = per_node / args.encoder_workers
    commit, row_bytes = _commit_rate(args.commit_dim)
    print(f"\nscaling model (measured here: {per_worker:.1f} images/s per encoder worker on {args.ray_cpus} CPUs, "
          f"fixed costs included; the driver commits {commit:.0f} images/s of {args.commit_dim}-d vectors, "
          f"{row_bytes:.0f} catalog bytes per image; a GPU rate is not measured on this machine)")
    print(f"{'nodes':>6} {'images/s':>10} {'bound by':>10} {'hours per 100M':>15}")
    for nodes in [int(x) for x in args.nodes.split(",")]:
        rate = min(nodes * per_node, commit)
        bound = "driver" if nodes * per_node >= commit else "workers"
        print(f"{nodes:>6} {rate:>10.0f} {bound:>10} {1e8 / rate / 3600:>15.1f}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
