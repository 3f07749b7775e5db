"""Figures of the live index (issue 26): write-to-searchable latency, the watcher's idle cost, a flood.

- latency: a tiny-shapes index watches a folder; one new image at a time is copied in and the
  time from the end of the copy to its row being committed (searchable: another process's
  search sees it) is taken, N times: p50, p95, max;
- idle: a tree of --files empty ``.jpg`` files in folders of --per-folder is watched, in a fresh
  process per mode (inotify events, then polling every --poll-interval s), by the watcher alone
  (its batches go nowhere: the cost of watching, not of indexing): start time, RSS before and
  after, CPU share over --idle seconds of nothing happening;
- flood: --flood images copied into the watched folder at once: seconds until all are indexed,
  images/s, peak of pending changes, the process's peak RSS growth.

Prints JSON (one object) with every figure and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def rss_mb() -> float:
    """This process's resident memory now (Linux /proc), in MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_tree(root: Path, files: int, per_folder: int) -> float:
    t0 = time.perf_counter()
    for i in range(files):
        folder = root / f"d{i // per_folder:05d}"
        if i % per_folder == 0:
            folder.mkdir(parents=True)
        (folder / f"f{i:07d}.jpg").touch()
    return time.perf_counter() - t0


def idle_watchdog_polling(tree: str, idle: float, poll_interval: float) -> dict:
    """watchdog's own PollingObserver (a snapshot of every file), for comparison."""
    from watchdog.events import FileSystemEventHandler
    from watchdog.observers.polling import PollingObserver

    before = rss_mb()
    observer = PollingObserver(timeout=poll_interval)
    t0 = time.perf_counter()
    observer.schedule(FileSystemEventHandler(), tree, recursive=True)
    observer.start()
    started = time.perf_counter() - t0
    time.sleep(1.0)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    time.sleep(idle)
    cpu = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
    after = rss_mb()
    observer.stop()
    return {"mode": "watchdog PollingObserver", "start_s": round(started, 2), "rss_before_mb": round(before, 1),
            "rss_watching_mb": round(after, 1), "rss_growth_mb": round(after - before, 1),
            "idle_cpu_percent": round(100 * cpu, 2)}


def idle_child(tree: str, mode: str, idle: float, poll_interval: float) -> dict:
    from searchindex.ingest.watch import FolderWatcher, WatchOptions

    if mode == "watchdog-polling":
        return idle_watchdog_polling(tree, idle, poll_interval)
    before = rss_mb()
    batches: list[int] = []
    options = WatchOptions(polling=mode == "polling", poll_interval=poll_interval, rescan_interval=0)
    watcher = FolderWatcher([tree], lambda b: batches.append(len(b)), lambda roots, stop: None, options)
    t0 = time.perf_counter()
    watcher.start()
    started = time.perf_counter() - t0
    modes = watcher.modes()
    time.sleep(1.0)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    time.sleep(idle)
    cpu = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
    after = rss_mb()
    watcher.stop()
    return {"mode": modes[tree], "start_s": round(started, 2), "rss_before_mb": round(before, 1),
            "rss_watching_mb": round(after, 1), "rss_growth_mb": round(after - before, 1),
            "idle_cpu_percent": round(100 * cpu, 2), "batches_while_idle": len(batches)}


def bench_idle(args: argparse.Namespace, work: Path) -> dict:
    tree = work / "tree"
    made = make_tree(tree, args.files, args.per_folder)
    out: dict = {"files": args.files, "folders": -(-args.files // args.per_folder), "tree_seconds": round(made, 1)}
    for mode in ("events", "polling", *(["watchdog-polling"] if args.compare_watchdog else [])):
        res = subprocess.run([sys.executable, __file__, "--child-idle", mode, "--tree", str(tree), "--idle",
                              str(args.idle), "--poll-interval", str(args.poll_interval)],
                             capture_output=True, text=True, check=True)
        out[mode] = json.loads(res.stdout.strip().splitlines()[-1])
    shutil.rmtree(tree)
    return out


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def bench_latency_and_flood(args: argparse.Namespace, work: Path) -> dict:
    from searchindex import Index
    from searchindex.demo.synthetic import write_dataset
    from searchindex.ingest.watch import WatchOptions

    scenes = work / "scenes"
    write_dataset(scenes, count=args.latency + args.flood + 20, seed=3, size=64)
    pool = sorted(scenes.glob("*.png"))
    photos = work / "photos"
    photos.mkdir()
    for f in pool[:20]:
        shutil.copy2(f, photos / f.name)
    out: dict = {}
    with Index.create(work / "idx", model="tiny-shapes", device="cpu") as idx, \
            Index.open(work / "idx", device="cpu") as reader:
        idx.add_folder(photos)
        options = WatchOptions(debounce=args.debounce, rescan_interval=0)
        handle = idx.watch(options=options)
        watcher = handle._watcher
        while watcher._rescan:
            time.sleep(0.05)
        lat: list[float] = []
        for f in pool[20:20 + args.latency]:
            target = photos / f"new-{f.name}"
            shutil.copy(f, target)
            t0 = time.perf_counter()
            while not reader.catalog.read.ids_by_path([str(target)]):
                time.sleep(0.005)
            lat.append(time.perf_counter() - t0)
            time.sleep(0.3)
        out["latency"] = {"n": len(lat), "debounce_s": args.debounce, "p50_s": round(percentile(lat, 0.5), 3),
                          "p95_s": round(percentile(lat, 0.95), 3), "max_s": round(max(lat), 3)}
        if args.flood:
            flood = work / "flood"
            flood.mkdir()
            for f in pool[20 + args.latency:]:
                os.link(f, flood / f.name)  # hard links: the copy below is the flood, not their making
            expected = idx.count() + args.flood
            peak = [0]
            done = threading.Event()

            def sample() -> None:
                p = watcher._pending
                while not done.is_set():
                    peak[0] = max(peak[0], len(p.files) + len(p.gone) + len(p.folders) + len(p.gone_folders))
                    time.sleep(0.01)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            rss0, peak0 = rss_mb(), peak_rss_mb()
            t0 = time.perf_counter()
            shutil.copytree(flood, photos / "flood")
            copied = time.perf_counter() - t0
            while reader.count() < expected:
                time.sleep(0.05)
            took = time.perf_counter() - t0
            done.set()
            out["flood"] = {"files": args.flood, "copy_s": round(copied, 2), "all_indexed_s": round(took, 2),
                            "images_per_s": round(args.flood / took, 1), "peak_pending": peak[0],
                            "rss_before_mb": round(rss0, 1), "peak_rss_growth_mb": round(peak_rss_mb() - peak0, 1),
                            "batches": handle.batches}
        handle.stop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=100_000, help="files in the idle tree (default 100,000)")
    ap.add_argument("--per-folder", type=int, default=100, help="files per folder of the idle tree")
    ap.add_argument("--idle", type=float, default=30.0, help="seconds of idle CPU measured per mode")
    ap.add_argument("--poll-interval", type=float, default=10.0, help="seconds between polls (polling mode)")
    ap.add_argument("--latency", type=int, default=30, help="images for the latency figures")
    ap.add_argument("--flood", type=int, default=1000, help="images copied in at once (0: no flood)")
    ap.add_argument("--debounce", type=float, default=0.5, help="the watcher's debounce (seconds)")
    ap.add_argument("--compare-watchdog", action="store_true",
                    help="also measure watchdog's own PollingObserver on the idle tree (what polling replaced)")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: idle, latency")
    ap.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one)")
    ap.add_argument("--child-idle", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--tree", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_idle:
        print(json.dumps(idle_child(args.tree, args.child_idle, args.idle, args.poll_interval)))
        return
    skip = set(filter(None, args.skip.split(",")))
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        out: dict = {"date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count()}
        if "latency" not in skip:
            out.update(bench_latency_and_flood(args, work))
        if "idle" not in skip:
            out["idle"] = bench_idle(args, work)
        out["loadavg"] = os.getloadavg()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
