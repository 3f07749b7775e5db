#!/usr/bin/env python3
"""searchindex against rclip (the peer a user would pick instead), whole processes, alternating.

Installs nothing.  Needs rclip in some environment (``--rclip PATH`` to its executable,
else ``rclip`` on PATH); keep it in its own venv so it cannot disturb this one:

    python3 -m venv /tmp/rclip-venv && /tmp/rclip-venv/bin/pip install rclip==3.3.0
    python scripts/bench_peers.py --rclip /tmp/rclip-venv/bin/rclip

Both tools get the same architecture with the same random weights: open_clip
``ViT-B-32-256`` (``--pretrained none``, seeded as searchindex seeds it) is exported to
the ONNX files rclip loads (``$RCLIP_DATADIR/ViT-B-32-256-datacomp_s34b_b86k/{visual,
textual}.onnx``, opset 18, input ``input``, output ``output``, dynamic batch) next to
the BPE vocabulary open_clip ships, so rclip never reaches for the network.

What is timed, every pair run as searchindex then rclip in fresh processes (median of
``--pairs``), with the load average printed alongside:

- first index of ``--n12`` photo-like 12 MP JPEGs and of ``--n256`` 256-px JPEGs into a
  fresh index (rclip: a fresh database; its run also answers one query, which it cannot
  skip); wall time, CPU time, and peak memory (the largest resident set of the process
  tree, sampled every 50 ms, and the kernel's peak RSS of the largest single process);
- a cold first-time text search on a ``--search-count``-image index (a new query each run);
- searchindex on ``--naive`` new 12 MP photos against the naive loop (one process: full
  decode, open_clip preprocessing, fp32, batches of 8), and the seconds from process start
  to the first image encoded on both.

``--python`` runs searchindex with another interpreter (for example a virtual environment with
the core install, no torch: ``--python /tmp/core/bin/python``); the weights then travel as a
safetensors file of the same random model (``--pretrained FILE``), which a core install reads
without torch.  ``--checkpoint`` does the same for this interpreter, so that both installs run
the same weights the same way.

One-time costs (rclip's model files, searchindex's exported/prepared towers in its model
cache) are paid by an untimed warm-up on one image, as a user's second and later runs see.
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

MODEL, PRETRAINED = "ViT-B-32-256", "none"
CHECKPOINT = "weights.safetensors"  # the same random weights as a file, for --python / --checkpoint
RCLIP_SUBDIR = "ViT-B-32-256-datacomp_s34b_b86k"
FIRST_ENCODED = "first images encoded"  # the debug message searchindex logs after its first encoder call

# Runs searchindex's CLI and prints the wall-clock time of the first encoder call, from the
# library's debug log, on stderr: the parent subtracts its own launch time.
SEARCHINDEX_PROBE = """
import logging, sys, time, runpy
class Probe(logging.Handler):
    def emit(self, record):
        if record.getMessage().startswith(%r):
            print("FIRST_ENCODED", record.created, file=sys.stderr, flush=True)
probe = Probe(); probe.setLevel(logging.DEBUG)
root = logging.getLogger("searchindex"); root.addHandler(probe); root.setLevel(logging.DEBUG)
root.propagate = False
root.setLevel = lambda level: None  # the CLI sets its own levels; keep this probe's
sys.argv = ["searchindex", *sys.argv[1:]]
runpy.run_module("searchindex.cli", run_name="__main__")
""".replace("%r", repr(FIRST_ENCODED))

# The naive loop: what a user writes with open_clip in ten lines.
NAIVE = """
import sys, time
from pathlib import Path
import torch, open_clip
from PIL import Image, ImageOps
torch.manual_seed(0)
model, _, preprocess = open_clip.create_model_and_transforms(%r, pretrained=None)
model.eval()
files = sorted(Path(sys.argv[1]).glob("*.jpg"))
first = None
with torch.inference_mode():
    for i in range(0, len(files), 8):
        batch = []
        for f in files[i:i + 8]:
            with Image.open(f) as im:
                batch.append(preprocess(ImageOps.exif_transpose(im).convert("RGB")))
        model.encode_image(torch.stack(batch))
        if first is None:
            first = time.time()
            print("FIRST_ENCODED", first, file=sys.stderr, flush=True)
""".replace("%r", repr(MODEL))


@dataclass
class Run:
    seconds: float
    cpu: float  # user + system seconds of the process tree
    tree_rss: int  # bytes: the largest sum of resident sets over the process tree, sampled
    max_rss: int  # bytes: the kernel's peak RSS of the largest single process (wait4)
    first_encoded: float | None = None  # seconds from launch to the first encoder call
    # bytes: the largest sum of proportional set sizes over the tree, sampled: pages that forked
    # workers share with their parent count once in all, where the RSS sum counts them per process
    tree_pss: int = 0


def _children(pid: int) -> list[int]:
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                out.extend(int(c) for c in fh.read().split())
    except OSError:
        pass
    return out


def _tree_memory(pid: int) -> tuple[int, int]:
    """The sums of RSS and of PSS over the process tree of ``pid``, in bytes."""
    rss = pss = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/statm") as fh:
                rss += int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            with open(f"/proc/{p}/smaps_rollup") as fh:
                pss += next((int(line.split()[1]) * 1024 for line in fh if line.startswith("Pss:")), 0)
        except (OSError, IndexError, ValueError):
            continue
        todo.extend(_children(p))
    return rss, pss


def run(cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> Run:
    """Run ``cmd`` to completion; wall time, CPU time and peak memory of its process tree."""
    t0 = time.time()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = [0, 0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            rss, pss = _tree_memory(proc.pid)
            peak[0], peak[1] = max(peak[0], rss), max(peak[1], pss)
            done.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stderr_lines: list[str] = []
    reader = threading.Thread(target=lambda: stderr_lines.extend(proc.stderr), daemon=True)  # type: ignore[arg-type]
    reader.start()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.time() - t0
    done.set()
    sampler.join()
    reader.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{''.join(stderr_lines)[-3000:]}")
    first = next((float(line.split()[1]) - t0 for line in stderr_lines if line.startswith("FIRST_ENCODED")), None)
    return Run(seconds, usage.ru_utime + usage.ru_stime, peak[0], usage.ru_maxrss * 1024, first, peak[1])


def load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def export_for_rclip(datadir: Path) -> None:
    """The random-init ViT-B-32-256 of searchindex (same seed) as rclip's ONNX files and vocabulary."""
    import warnings

    import torch

    from searchindex.models.backends import load_encoder
    from searchindex.models.spec import resolve_model
    from searchindex.models.tokenizer import bpe_vocabulary_path

    folder = datadir / RCLIP_SUBDIR
    if (folder / "visual.onnx").is_file() and (folder / "textual.onnx").is_file() and (datadir / CHECKPOINT).is_file():
        return
    folder.mkdir(parents=True, exist_ok=True)
    encoder = load_encoder(resolve_model(MODEL, PRETRAINED), "cpu", "fp32")
    model = encoder.torch_model  # the fp32 open_clip model searchindex builds for this spec
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(datadir / CHECKPOINT))

    class Text(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return self.model.encode_text(tokens)

    size = encoder.image_size
    torch.backends.mha.set_fastpath_enabled(False)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        for name, module, example in (
            ("visual.onnx", model.visual.eval(), torch.zeros(2, 3, size, size)),
            ("textual.onnx", Text().eval(), torch.zeros(2, 77, dtype=torch.long)),
        ):
            tmp = folder / f".{name}.tmp"
            torch.onnx.export(module, (example,), str(tmp), input_names=["input"], output_names=["output"],
                              dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}}, opset_version=18,
                              dynamo=False)
            os.replace(tmp, folder / name)
    vocab = datadir / "tokenizer" / "bpe_simple_vocab_16e6.txt.gz"
    vocab.parent.mkdir(exist_ok=True)
    with gzip.open(bpe_vocabulary_path()) as check:  # must be readable as rclip reads it
        check.read(16)
    shutil.copy(bpe_vocabulary_path(), vocab)


def rclip_datadir(models: Path, fresh: Path) -> Path:
    """A fresh rclip data folder (new database) whose model files link to ``models``."""
    fresh.mkdir(parents=True)
    (fresh / RCLIP_SUBDIR).symlink_to(models / RCLIP_SUBDIR, target_is_directory=True)
    (fresh / "tokenizer").symlink_to(models / "tokenizer", target_is_directory=True)
    return fresh


def make_sets(work: Path, args: argparse.Namespace) -> dict[str, Path]:
    """Generated photo-like JPEGs, kept in ``work`` so a rerun reuses them."""
    from bench_index import make_set

    sets = {"12mp": (args.n12, 4000, 3000, 12), "256px": (args.n256, 256, 256, 256),
            "search": (args.search_count, 256, 256, 7), "naive": (args.naive, 4000, 3000, 64)}
    out = {}
    for name, (n, w, h, seed) in sets.items():
        folder = work / f"{name}-{n}"
        if n and not (folder / ".complete").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            t0 = time.perf_counter()
            # A larger set of the same kind made earlier (or the 12 MP set, for the naive loop): link its first files.
            bigger = sorted((p for p in work.glob(f"{'12mp' if name == 'naive' else name}-*")
                             if (p / ".complete").is_file() and int(p.name.rsplit("-", 1)[1]) >= n), key=str)
            if bigger:
                folder.mkdir()
                for f in sorted(bigger[0].glob("*.jpg"))[:n]:
                    os.link(f, folder / f.name)
            else:
                make_set(folder, n, w, h, seed)
            (folder / ".complete").touch()
            print(f"generated {n} {name} images in {time.perf_counter() - t0:.0f} s", flush=True)
        out[name] = folder
    return out


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def report(label: str, ours: list[Run], theirs: list[Run], theirs_name: str = "rclip") -> None:
    s, r = median([x.seconds for x in ours]), median([x.seconds for x in theirs])
    cs, cr = median([x.cpu for x in ours]), median([x.cpu for x in theirs])
    ms, mr = median([x.tree_rss for x in ours]), median([x.tree_rss for x in theirs])
    ks, kr = median([x.max_rss for x in ours]), median([x.max_rss for x in theirs])
    ps, pr = median([x.tree_pss for x in ours]), median([x.tree_pss for x in theirs])
    print(f"  {label}: searchindex {s:.2f} s, {theirs_name} {r:.2f} s -> searchindex is {r / s:.2f}x as fast "
          f"(CPU {cs:.1f} s vs {cr:.1f} s, {cr / cs:.2f}x); peak tree RSS {ms / 1e9:.2f} GB vs {mr / 1e9:.2f} GB "
          f"({ms / mr:.2f}x); peak tree PSS {ps / 1e9:.2f} GB vs {pr / 1e9:.2f} GB; "
          f"largest process {ks / 1e9:.2f} GB vs {kr / 1e9:.2f} GB", flush=True)
    fs = [x.first_encoded for x in ours if x.first_encoded is not None]
    fr = [x.first_encoded for x in theirs if x.first_encoded is not None]
    if fs or fr:
        print(f"  {label}: first image encoded at "
              + (f"{median(fs):.2f} s (searchindex)" if fs else "? (searchindex)")
              + (f", {median(fr):.2f} s ({theirs_name})" if fr else ""), flush=True)


def alternate(label: str, pairs: int, ours: Callable[[int], Run], theirs: Callable[[int], Run],
              theirs_name: str = "rclip") -> None:
    a, b = [], []
    print(f"{label} ({load()}):", flush=True)
    for i in range(pairs):
        a.append(ours(i))
        b.append(theirs(i))
        print(f"    pair {i + 1}: searchindex {a[-1].seconds:.2f} s / {a[-1].tree_rss / 1e9:.2f} GB, "
              f"{theirs_name} {b[-1].seconds:.2f} s / {b[-1].tree_rss / 1e9:.2f} GB ({load()})", flush=True)
    report(label, a, b, theirs_name)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rclip", default=None, help="the rclip executable (default: rclip on PATH)")
    ap.add_argument("--n12", type=int, default=100, help="12-megapixel JPEGs to index (0 skips)")
    ap.add_argument("--n256", type=int, default=300, help="256-pixel JPEGs to index (0 skips)")
    ap.add_argument("--search-count", type=int, default=1000, help="images in the index for cold search (0 skips)")
    ap.add_argument("--naive", type=int, default=64, help="12 MP photos for the naive-loop comparison (0 skips)")
    ap.add_argument("--pairs", type=int, default=3, help="alternating pairs per comparison (medians)")
    ap.add_argument("--work", type=Path, default=None,
                    help="keep generated images, rclip's model files and the model cache here (reused next time)")
    ap.add_argument("--only", default="index,search,naive", help="comma-separated subset of index,search,naive")
    ap.add_argument("--searchindex-src", type=Path, default=REPO,
                    help="the searchindex source tree to run (default: this checkout), e.g. an older commit's export")
    ap.add_argument("--python", type=Path, default=None,
                    help="the interpreter that runs searchindex (e.g. a core install's venv; implies --checkpoint)")
    ap.add_argument("--checkpoint", action="store_true",
                    help="searchindex reads the random weights from a safetensors file instead of --pretrained none")
    ap.add_argument("--export-only", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.export_only:
        export_for_rclip(args.export_only)
        return 0

    rclip = args.rclip or shutil.which("rclip")
    only = set(args.only.split(","))
    if rclip is None and only & {"index", "search"}:
        ap.error("rclip not found: pass --rclip PATH (install it in its own venv, see --help)")
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-peers-"))
    work.mkdir(parents=True, exist_ok=True)
    runs = Path(tempfile.mkdtemp(prefix="runs-", dir=work))
    src = args.searchindex_src.resolve()
    python = str(args.python or sys.executable)
    env = {**os.environ, "PYTHONPATH": str(src), "HF_HUB_OFFLINE": "1",
           "SEARCHINDEX_CACHE": str(work / f"cache-{src.name}-{'core' if args.python else 'full'}")}
    if args.python:  # the other environment's own installed searchindex
        env.pop("PYTHONPATH")
    rclip_env = {k: v for k, v in env.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    rclip_env["HF_HUB_OFFLINE"] = "1"

    print(f"{os.cpu_count()} CPUs, {load()}; {MODEL} / {PRETRAINED} on both sides; rclip: {rclip}; "
          f"searchindex from {args.python or args.searchindex_src}", flush=True)
    models = work / "rclip-models"
    pretrained = str(models / CHECKPOINT) if args.python or args.checkpoint else PRETRAINED
    if rclip or pretrained != PRETRAINED:
        t0 = time.perf_counter()
        # In a child process: the model it loads must not count towards this process's memory,
        # whose peak RSS every later child would inherit through fork (ru_maxrss survives exec).
        subprocess.run([sys.executable, __file__, "--export-only", str(models)],
                       env={**env, "PYTHONPATH": str(src)}, check=True)
        print(f"rclip's ONNX files ready in {time.perf_counter() - t0:.0f} s", flush=True)
    sets = make_sets(work, args)
    counter = iter(range(10**9))

    def si_index(folder: Path, index: Path, extra: tuple[str, ...] = ()) -> Run:
        return run([python, "-c", SEARCHINDEX_PROBE, "index", str(folder), "--index", str(index),
                    "--model", MODEL, "--pretrained", pretrained, "--device", "cpu", *extra], env)

    def rclip_index(folder: Path) -> Run:
        data = rclip_datadir(models, runs / f"rclip-{next(counter)}")
        return run([rclip, "--top", "1", "-f", "a photo"], {**rclip_env, "RCLIP_DATADIR": str(data)}, cwd=folder)

    # Warm-up: one image each, untimed (searchindex's model cache; rclip's imports and files).
    one = runs / "one"
    one.mkdir()
    first = sorted(sets["256px"].glob("*.jpg")) or sorted(sets["search"].glob("*.jpg"))
    if first:
        shutil.copy(first[0], one / first[0].name)
        t0 = time.perf_counter()
        si_index(one, runs / "warm-idx")
        if rclip:
            rclip_index(one)
        print(f"warm-up (one-time model cache) {time.perf_counter() - t0:.1f} s", flush=True)

    if "index" in only:
        for name in ("12mp", "256px"):
            folder = sets[name]
            n = len(list(folder.glob("*.jpg")))
            if n:
                alternate(f"first index of {n} {name} JPEGs", args.pairs,
                          lambda i, f=folder: si_index(f, runs / f"si-{next(counter)}"),
                          lambda i, f=folder: rclip_index(f))

    if "search" in only and args.search_count:
        folder = sets["search"]
        si_idx = runs / "search-idx"
        t0 = time.perf_counter()
        si_index(folder, si_idx)
        data = rclip_datadir(models, runs / "rclip-search")
        search_env = {**rclip_env, "RCLIP_DATADIR": str(data)}
        run([rclip, "--top", "1", "-f", "a photo"], search_env, cwd=folder)
        print(f"built both {args.search_count}-image search indexes in {time.perf_counter() - t0:.0f} s", flush=True)
        stamp = time.time_ns()
        alternate(f"cold first-time text search, {args.search_count}-image index", args.pairs,
                  lambda i: run([python, "-m", "searchindex.cli", "search", "--index", str(si_idx),
                                 "--device", "cpu", "-k", "10", f"a photo of a thing {stamp} {i}"], env),
                  lambda i: run([rclip, "--no-indexing", "--top", "10", "-f", f"a photo of a thing {stamp} {i}"],
                                search_env, cwd=folder))
        repeated = [run([python, "-m", "searchindex.cli", "search", "--index", str(si_idx), "--device",
                         "cpu", "-k", "10", f"a photo of a thing {stamp} 0"], env) for _ in range(args.pairs)]
        print(f"  repeated query (searchindex's query cache): {median([r.seconds for r in repeated]):.2f} s, "
              f"peak {median([r.tree_rss for r in repeated]) / 1e9:.2f} GB", flush=True)

    if "naive" in only and args.naive:
        folder = sets["naive"]
        alternate(f"{args.naive} new 12 MP photos, searchindex vs the naive loop", args.pairs,
                  lambda i: si_index(folder, runs / f"si-{next(counter)}"),
                  lambda i: run([sys.executable, "-c", NAIVE, str(folder)], env), "naive loop")

    print(f"done ({load()}); files in {work}", flush=True)
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    else:
        shutil.rmtree(runs, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
