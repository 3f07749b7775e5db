"""Local indexing against ``--engine ray`` on one machine, and the scaling model for N nodes.

Whole ``searchindex index`` processes, each into a fresh index of the same generated
folder, alternating local / ray, in two settings:

- cold: ``--engine ray`` starts (and stops) its own local Ray instance, as on a laptop;
- warm: ``--engine ray --ray-address HOST:PORT`` joins a Ray instance started once before
  the runs (``ray start --head``, in its own temp dir so that no other ``ray.init()`` here
  finds it; stopped at the end), the realistic cluster case.

Prints each run's wall time and the ``add_folder`` seconds it reports, the ratio ray/local
per setting (best of the rounds), and the load average.  A warm-up local run (64 images) first prepares
the model's int8 tower, so no measured run pays for that.  Then the scaling model: what one
encoder worker does (images/s of the warm Ray run, per worker), what the single driver can
commit (images/s of ``Catalog.commit_batch`` with precomputed vectors), and the projected rate
for N nodes = min(N x per-node rate, driver commit rate).

    python scripts/bench_distributed.py [--count 300] [--size 256] [--rounds 2] [--model ViT-B-32-256]
        [--pretrained none] [--settings cold,warm] [--ray-cpus 2] [--encoder-workers 1] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _env() -> dict[str, str]:
    # A `ray start` head checks the token of every driver that joins (Ray 2.5x: token auth by default).
    return {**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "token")}


def _index(folder: Path, index: Path, args: argparse.Namespace, engine: str,
           address: str | None = None) -> tuple[float, dict]:
    cmd = [sys.executable, "-m", "searchindex.cli", "index", str(folder), "--index", str(index), "--model",
           args.model, "--device", "cpu", "--batch-size", str(args.batch_size), "--json"]
    if args.pretrained:
        cmd += ["--pretrained", args.pretrained]
    if engine == "ray":
        cmd += ["--engine", "ray", "--encoder-workers", str(args.encoder_workers)]
        cmd += ["--ray-address", address] if address else ["--ray-cpus", str(args.ray_cpus)]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=ROOT)
    wall = time.perf_counter() - t0
    if done.returncode:
        sys.exit(f"{engine} run failed:\n{done.stderr[-3000:]}")
    return wall, json.loads(done.stdout)


class _Head:
    """A Ray head started for the warm runs, in a temp dir of its own, stopped by its process ids."""

    def __init__(self, cpus: int, port: int = 6391) -> None:
        self.temp = Path(tempfile.mkdtemp(prefix="si-rb-", dir="/tmp"))  # short: Ray's socket paths
        ray = shutil.which("ray", path=os.path.dirname(sys.executable)) or "ray"
        subprocess.run([ray, "start", "--head", "--num-cpus", str(cpus), "--port", str(port), "--temp-dir",
                        str(self.temp), "--include-dashboard", "false", "--disable-usage-stats"],
                       check=True, capture_output=True, env=_env())
        self.address = (self.temp / "ray_current_cluster").read_text().strip()

    def stop(self) -> None:
        parents: dict[int, int] = {}
        mine: set[int] = set()
        for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
            try:
                parents[pid] = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
                if str(self.temp).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    mine.add(pid)
            except (OSError, IndexError, ValueError):
                pass
        grew = True
        while grew:  # and their children (the raylet's workers name no temp dir)
            below = {pid for pid, ppid in parents.items() if ppid in mine} - mine
            mine |= below
            grew = bool(below)
        for pid in mine:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.temp, ignore_errors=True)


def _commit_rate(dim: int, n: int = 5000, batch: int = 64) -> tuple[float, float]:
    """Images/s of the driver's catalog commits with vectors already computed (no decode, no model),
    and the catalog's bytes per image."""
    from searchindex.models.spec import ModelSpec
    from searchindex.store.catalog.database import Catalog
    from searchindex.store.catalog.records import NewImage, PhotoMetadata

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
    ap.add_argument("--count", type=int, default=300, help="generated images")
    ap.add_argument("--size", type=int, default=256, help="their side in pixels")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds (local, ray / ray, local) per setting")
    ap.add_argument("--model", default="ViT-B-32-256", help="tiny-shapes makes every fixed cost dominate")
    ap.add_argument("--pretrained", default="none", help="none: random weights (the same compute, no download)")
    ap.add_argument("--settings", default="cold,warm", help="cold (own local instance), warm (a running head)")
    ap.add_argument("--ray-cpus", type=int, default=2, help="CPUs of the local instance / the head")
    ap.add_argument("--encoder-workers", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--commit-dim", type=int, default=512, help="vector size of the commit-rate measurement")
    ap.add_argument("--nodes", default="1,2,4,8,16,32,64", help="node counts of the scaling table")
    args = ap.parse_args()
    if args.pretrained in ("", "default"):
        args.pretrained = None

    from searchindex.demo.synthetic import write_dataset

    print(f"{args.count} images of {args.size} px, model {args.model}/{args.pretrained or 'default'}, "
          f"Ray: {args.ray_cpus} CPUs, {args.encoder_workers} encoder worker(s); CPUs here: {os.cpu_count()}, "
          f"load average before: {os.getloadavg()[0]:.2f}")
    ratios: dict[str, tuple[float, float]] = {}
    ray_add = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        write_dataset(folder, count=args.count, seed=4, size=args.size)
        n = 0
        few = Path(tmp) / "few"  # a small folder is enough to prepare the model
        write_dataset(few, count=min(args.count, 64), seed=5, size=args.size)
        wall, _ = _index(few, Path(tmp) / "warm-up", args, "local")
        print(f"warm-up local run on {min(args.count, 64)} images (prepares the model once): {wall:.1f} s")
        for setting in args.settings.split(","):
            head = _Head(args.ray_cpus) if setting == "warm" else None
            runs: dict[str, list[tuple[float, float]]] = {"local": [], "ray": []}
            try:
                if head:
                    print(f"warm: a Ray head at {head.address}, started before the runs")
                for r in range(args.rounds):
                    for engine in ("local", "ray") if r % 2 == 0 else ("ray", "local"):
                        n += 1
                        wall, summary = _index(folder, Path(tmp) / f"idx{n}", args, engine,
                                               head.address if head else None)
                        if summary["indexed"] != args.count:
                            sys.exit(f"{engine} indexed {summary['indexed']} of {args.count}")
                        runs[engine].append((wall, summary["seconds"]))
                        print(f"{setting} round {r + 1} {engine:>5}: process {wall:6.1f} s, add_folder "
                              f"{summary['seconds']:6.1f} s ({args.count / summary['seconds']:.1f} images/s), "
                              f"load {os.getloadavg()[0]:.2f}")
            finally:
                if head:
                    head.stop()
            local_wall, local_add = min(w for w, _ in runs["local"]), min(a for _, a in runs["local"])
            ray_wall, best_add = min(w for w, _ in runs["ray"]), min(a for _, a in runs["ray"])
            ratios[setting] = (ray_wall / local_wall, best_add / local_add)
            if setting == "warm" or not ray_add:
                ray_add = best_add
    for setting, (process, add) in ratios.items():
        print(f"{setting}, best of {args.rounds}: process ray/local {process:.2f} "
              f"(overhead {100 * (process - 1):+.0f} %), "
              f"add_folder ray/local {add:.2f} (overhead {100 * (add - 1):+.0f} %)")

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
