#!/usr/bin/env python3
"""What `searchindex serve` costs: HTTP overhead per search, thumbnails, the page, memory.

On an index of N generated scenes (built once with tiny-shapes; or ``--index``):

1. API search latency against ``Index.search`` in the same process: a uvicorn
   server runs in a thread of this process over the same ``Index``; each query
   is timed both ways, alternating, with ``k=60`` (a page of the grid).
2. A page of 60 thumbnails fetched over 6 connections (as a browser does) from a
   separate ``searchindex serve`` process: cold (thumbnail folder deleted) and
   warm (made before), alternating rounds.
3. In headless Chromium (``--chromium``), against that server: the time from the
   Enter key to the first tile's image shown, and to ten, measured inside the page.
4. The server process's resident memory (VmRSS, VmHWM) after all that.

Prints the load average with the figures: timings on a shared machine are noisy.

    python scripts/bench_web.py --count 300            # the demo's size
    python scripts/bench_web.py --count 10000 --index /tmp/web10k.idx
    python scripts/bench_web.py --count 300 --screenshots docs/   # also the page's screenshots
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlencode

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from searchindex import Index  # noqa: E402
from searchindex.demo.synthetic import write_dataset  # noqa: E402

COLORS = ["red", "blue", "green", "yellow", "purple", "orange", "pink", "white"]
SHAPES = ["circle", "square", "triangle", "star", "cross"]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def texts(n: int) -> list[str]:
    out = [f"a photo of a {c} {s}" for c in COLORS for s in SHAPES]
    out += [f"a {c} {s}" for c in COLORS for s in SHAPES]
    return (out * (n // len(out) + 1))[:n]


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def ensure_index(path: Path, count: int, size: int) -> Path:
    if Index.exists(path):
        return path
    images = path.with_name(path.name + "-images")
    if not (images / "labels.jsonl").exists():
        print(f"generating {count} scenes in {images} ...", flush=True)
        write_dataset(images, count=count, seed=4242, size=size)
    print(f"indexing {images} with tiny-shapes ...", flush=True)
    t0 = time.perf_counter()
    with Index.create(path, model="tiny-shapes", device="cpu") as index:
        summary = index.add_folder(images)
    print(f"  {summary.indexed} images in {time.perf_counter() - t0:.0f} s", flush=True)
    return path


def get(conn: http.client.HTTPConnection, url: str) -> bytes:
    conn.request("GET", url)
    r = conn.getresponse()
    body = r.read()
    if r.status != 200:
        raise RuntimeError(f"{url}: {r.status} {body[:200]!r}")
    return body


def http_overhead(path: Path, queries: int) -> dict[str, float]:
    """p50/p95 of GET /api/search and of Index.search for the same texts, same process, alternating."""
    import uvicorn

    from searchindex.web import create_app

    app = create_app(path, device="cpu", warm=False)
    index: Index = app.state.web.index
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    conn = http.client.HTTPConnection("127.0.0.1", port)
    qs = texts(queries)
    for q in qs:  # warm: every text in the query cache, the vector index loaded, connections open
        index.search(q, k=60)
        get(conn, "/api/search?" + urlencode({"q": q, "k": 60}))
    direct, api = [], []
    for q in qs:
        t0 = time.perf_counter()
        index.search(q, k=60)
        direct.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        get(conn, "/api/search?" + urlencode({"q": q, "k": 60}))
        api.append(time.perf_counter() - t0)
    conn.close()
    server.should_exit = True
    thread.join(timeout=30)
    return {"direct_p50": pct(direct, 0.5), "direct_p95": pct(direct, 0.95), "api_p50": pct(api, 0.5),
            "api_p95": pct(api, 0.95)}


class ServeProcess:
    """`searchindex serve --port 0` in its own process."""

    def __init__(self, path: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from searchindex.cli import main; main()", "serve", "--index", str(path),
             "--port", "0", "--device", "cpu"], stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)})
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if "Serving " in line:
                self.url = line.split(" at ", 1)[1].split()[0].rstrip("/")
                break
        else:
            raise RuntimeError("searchindex serve did not start")
        self.port = int(self.url.rsplit(":", 1)[1])

    def memory(self) -> dict[str, float]:
        out = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1]) / 1024
        return out

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=30)


def thumbnails(server: ServeProcess, index_path: Path, rounds: int) -> dict[str, float]:
    """Seconds to fetch one page of 60 thumbnails over 6 connections, cold and warm."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port)
    ids: list[int] = []
    for q in texts(200):
        body = json.loads(get(conn, "/api/search?" + urlencode({"q": q, "k": 60})))
        ids = [r["image_id"] for r in body["results"]]
        if len(ids) == 60:
            break
    conn.close()

    def page() -> float:
        local = threading.local()

        def one(image_id: int) -> None:
            if not hasattr(local, "conn"):
                local.conn = http.client.HTTPConnection("127.0.0.1", server.port)
            get(local.conn, f"/api/images/{image_id}/thumbnail?size=256")

        t0 = time.perf_counter()
        with ThreadPoolExecutor(6) as pool:
            list(pool.map(one, ids))
        return time.perf_counter() - t0

    cold, warm = [], []
    for _ in range(rounds):
        shutil.rmtree(index_path / "thumbnails", ignore_errors=True)
        cold.append(page())
        warm.append(page())
    return {"cold_median": statistics.median(cold), "warm_median": statistics.median(warm),
            "cold_min": min(cold), "warm_min": min(warm)}


MEASURE = """() => {
  window.__bench = {};
  document.addEventListener('keydown', e => { if (e.key === 'Enter') window.__bench = {t0: performance.now()}; }, true);
  document.addEventListener('load', e => {
    const t = e.target;
    if (t.tagName !== 'IMG' || !t.closest('#grid .tile') || window.__bench.t0 === undefined) return;
    const n = [...document.querySelectorAll('#grid .tile img')].slice(0, 10)
      .filter(i => i.complete && i.naturalWidth).length;
    if (window.__bench.first === undefined) window.__bench.first = performance.now() - window.__bench.t0;
    if (n >= 10 && window.__bench.ten === undefined) window.__bench.ten = performance.now() - window.__bench.t0;
  }, true);
}"""


def browser(server: ServeProcess, chromium: str, queries: int) -> dict[str, float]:
    """ms from Enter to the first (and tenth) tile image shown: new texts, and the same texts again."""
    from playwright.sync_api import sync_playwright

    out: dict[str, float] = {}
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = b.new_page(viewport={"width": 1280, "height": 900}, bypass_csp=True)  # to inject the timer
        page.goto(server.url + "/")
        page.evaluate(MEASURE)
        qs = texts(queries * 2)[-queries:]  # texts the other measurements did not use first

        def run(q: str) -> tuple[float, float]:
            page.fill("#q", q)
            page.press("#q", "Enter")
            page.wait_for_function("() => window.__bench.ten !== undefined", timeout=30_000)
            got = page.evaluate("() => window.__bench")
            return got["first"], got["ten"]

        run("a warm-up query")
        for label, batch in (("new", qs), ("repeat", qs)):
            firsts, tens = zip(*(run(q) for q in batch), strict=True)
            out[f"{label}_first_p50_ms"] = pct(list(firsts), 0.5)
            out[f"{label}_first_p95_ms"] = pct(list(firsts), 0.95)
            out[f"{label}_ten_p50_ms"] = pct(list(tens), 0.5)
        b.close()
    return out


SHOWN = """() => { const imgs = [...document.querySelectorAll('#grid .tile img')].slice(0, 30);
                   return imgs.length === 30 && imgs.every(i => i.complete && i.naturalWidth); }"""


def screenshots(server: ServeProcess, chromium: str, folder: Path) -> list[Path]:
    """The search grid, the lightbox, and the liked strip, as small PNGs."""
    from PIL import Image
    from playwright.sync_api import sync_playwright

    folder.mkdir(parents=True, exist_ok=True)
    shots = []
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = b.new_page(viewport={"width": 960, "height": 600})

        def shot(name: str) -> None:
            out = folder / name
            page.screenshot(path=str(out))
            Image.open(out).convert("RGB").quantize(64).save(out, optimize=True)
            shots.append(out)

        page.goto(server.url + "/?q=a+photo+of+a+red+circle")
        page.wait_for_function(SHOWN)
        shot("web-grid.png")
        page.click("#grid .tile:nth-child(2) img")
        page.wait_for_function("() => document.querySelector('#lb-img').naturalWidth > 0")
        page.wait_for_selector("#lb-facts dt")
        shot("web-lightbox.png")
        page.keyboard.press("Escape")
        ids = page.eval_on_selector_all("#grid .tile", "ts => ts.map(t => t.dataset.imageId)")
        page.goto(server.url + "/?" + urlencode([("q", "a photo of a circle"), ("like", ids[3]), ("like", ids[5]),
                                                 ("unlike", ids[8])]))
        page.wait_for_function(SHOWN)
        page.wait_for_function("() => [...document.querySelectorAll('#teach img')].every(i => i.complete)")
        shot("web-liked.png")
        b.close()
    return shots


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=300, help="scenes to generate when building the index")
    parser.add_argument("--size", type=int, default=128, help="edge of the generated scenes in pixels")
    parser.add_argument("--index", type=Path, default=None,
                        help="index to use (built here from --count scenes when missing); default a temp folder")
    parser.add_argument("--queries", type=int, default=40, help="texts per latency measurement")
    parser.add_argument("--rounds", type=int, default=3, help="cold/warm rounds of the 60-thumbnail page")
    parser.add_argument("--chromium", default="/usr/bin/chromium", help="Chromium executable for the page timings")
    parser.add_argument("--screenshots", type=Path, default=None, help="also save the page's screenshots here")
    args = parser.parse_args()

    tmp = None
    if args.index is None:
        tmp = tempfile.mkdtemp(prefix="bench-web-")
        args.index = Path(tmp) / "web.idx"
    path = ensure_index(args.index, args.count, args.size)
    with Index.open(path) as index:
        images = index.count()
    print(f"index {path}: {images} images; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")

    o = http_overhead(path, args.queries)
    print(f"search k=60, {args.queries} texts, warm, same process: Index.search p50 {o['direct_p50'] * 1e3:.1f} ms "
          f"p95 {o['direct_p95'] * 1e3:.1f} ms; GET /api/search p50 {o['api_p50'] * 1e3:.1f} ms "
          f"p95 {o['api_p95'] * 1e3:.1f} ms; HTTP layer +{(o['api_p50'] - o['direct_p50']) * 1e3:.1f} ms at p50 "
          f"(ratio {o['api_p50'] / o['direct_p50']:.2f}); load {os.getloadavg()[0]:.1f}")

    server = ServeProcess(path)
    try:
        t = thumbnails(server, path, args.rounds)
        print(f"60 thumbnails (256 px, 6 connections, {args.rounds} rounds): "
              f"cold median {t['cold_median'] * 1e3:.0f} ms "
              f"(min {t['cold_min'] * 1e3:.0f}), warm median {t['warm_median'] * 1e3:.0f} ms "
              f"(min {t['warm_min'] * 1e3:.0f}); ratio {t['cold_median'] / t['warm_median']:.1f}; "
              f"load {os.getloadavg()[0]:.1f}")
        if os.path.exists(args.chromium):
            b = browser(server, args.chromium, min(args.queries, 20))
            print(f"Enter to first tile shown (Chromium, warm server): new texts p50 {b['new_first_p50_ms']:.0f} ms "
                  f"p95 {b['new_first_p95_ms']:.0f} ms, ten tiles p50 {b['new_ten_p50_ms']:.0f} ms; same texts again "
                  f"p50 {b['repeat_first_p50_ms']:.0f} ms p95 {b['repeat_first_p95_ms']:.0f} ms, ten tiles p50 "
                  f"{b['repeat_ten_p50_ms']:.0f} ms; load {os.getloadavg()[0]:.1f}")
            if args.screenshots is not None:
                for shot in screenshots(server, args.chromium, args.screenshots):
                    print(f"screenshot {shot} ({shot.stat().st_size // 1024} KB)")
        else:
            print(f"no Chromium at {args.chromium}: page timings skipped")
        mem = server.memory()
        print(f"server process memory: VmRSS {mem.get('VmRSS', 0):.0f} MiB, peak VmHWM {mem.get('VmHWM', 0):.0f} MiB")
    finally:
        server.stop()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
