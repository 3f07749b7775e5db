"""Install size and time: searchindex's core install against rclip, from a warm wheel cache, side by side.

Each round makes two fresh virtual environments, one per package, in alternating order (as pipx makes
them: no pip inside, filled by this interpreter's pip with ``--python``), and installs into each (the
packages come from pip's cache after the first round, so the figure is install work, not download
speed).  Prints each round and the median of each, and the size of each environment as ``du`` counts
it, with the largest distributions.

    python scripts/bench_install.py [--rounds 3] [--wheel dist/searchindex-*.whl]

Without ``--wheel`` a wheel of this checkout is built first (``pip wheel --no-deps``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _size(folder: Path) -> int:
    out = subprocess.run(["du", "-sb", str(folder)], capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


def _largest(venv: Path, n: int = 6) -> list[tuple[str, float]]:
    site = next(venv.glob("lib/python*/site-packages"))
    sizes = [(p.name, _size(p) / 1e6) for p in site.iterdir() if p.is_dir() and not p.name.endswith("-info")]
    return sorted(sizes, key=lambda s: -s[1])[:n]


def _install(target: str, venv: Path) -> float:
    # As pipx makes an application's environment: no pip of its own, filled by a shared pip (this one).
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--quiet",
                    "--disable-pip-version-check", target], check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--wheel", type=Path, help="a built searchindex wheel (default: build one now)")
    parser.add_argument("--peer", default="rclip==3.3.0", help="the package compared against")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-install-") as tmp_name:
        tmp = Path(tmp_name)
        wheel = args.wheel
        if wheel is None:
            subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp / "dist"),
                            str(ROOT)], check=True)
            wheel = next((tmp / "dist").glob("searchindex-*.whl"))
        targets = {"searchindex (core)": str(wheel), args.peer: args.peer}
        times: dict[str, list[float]] = {name: [] for name in targets}
        sizes: dict[str, int] = {}
        largest: dict[str, list[tuple[str, float]]] = {}
        for r in range(args.rounds):
            order = list(targets) if r % 2 == 0 else list(reversed(targets))
            for name in order:
                venv = tmp / f"venv-{r}-{len(times[name])}-{name.split()[0].split('=')[0]}"
                seconds = _install(targets[name], venv)
                times[name].append(seconds)
                sizes[name] = _size(venv)
                largest[name] = _largest(venv)
                print(f"round {r + 1}: {name}: {seconds:.1f} s, {sizes[name] / 1e6:.0f} MB", flush=True)
                shutil.rmtree(venv)
        summary = {name: {"median_s": round(statistics.median(t), 1), "runs_s": [round(x, 1) for x in t],
                          "venv_mb": round(sizes[name] / 1e6), "largest_mb": [(n, round(m)) for n, m in largest[name]]}
                   for name, t in times.items()}
        print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
