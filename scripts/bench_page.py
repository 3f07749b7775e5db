#!/usr/bin/env python3
"""What the page feels like on a large library: search, browse scrolling, and zip downloads.

On an index of N generated scenes (built once with tiny-shapes; or ``--index``), against a
``searchindex serve`` process, in headless Chromium at 1366x768:

1. Enter to the first tile's image shown, for new query texts (p50/p95; measured inside the page).
2. Browsing without a query: scrolled to the bottom, the time until the next page's first tile
   image is shown (infinite scroll), page after page (p50/p95); and ``GET /api/browse`` alone,
   cursor after cursor, over HTTP (p50/p95).
3. ``POST /api/download`` of the first ``--zip`` images newest first: MB/s and images/s of the
   streamed zip, read to the end.
4. ``--screenshots DIR``: the page at 1366x768 and 390x844 (browse, search, detail, selection).

Prints the load average with the figures: timings on a shared machine are noisy.

    python scripts/bench_page.py --count 10000 --index /tmp/page10k.idx
    python scripts/bench_page.py --count 300 --screenshots docs/
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_web import CHROMIUM_ARGS, ServeProcess, browser, ensure_index, pct  # noqa: E402

WAIT_NEXT_PAGE = """n => new Promise(resolve => {
  const t0 = performance.now();
  window.scrollTo(0, document.documentElement.scrollHeight);
  const check = () => {
    const imgs = document.querySelectorAll('#grid .tile img');
    if (imgs.length > n && imgs[n].complete && imgs[n].naturalWidth) resolve(performance.now() - t0);
    else requestAnimationFrame(check);
  };
  check();
})"""


def browse_scroll(server: ServeProcess, chromium: str, pages: int) -> dict[str, float]:
    """ms from scrolling to the bottom to the next page's first image shown, page after page."""
    from playwright.sync_api import sync_playwright

    times = []
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = b.new_page(viewport={"width": 1366, "height": 768})
        page.goto(server.url + "/")
        page.wait_for_function("() => document.querySelectorAll('#grid .tile').length >= 60")
        for _ in range(pages):
            n = page.evaluate("document.querySelectorAll('#grid .tile').length")
            times.append(page.evaluate(WAIT_NEXT_PAGE, n))
            page.wait_for_function("() => !document.querySelector('#status').textContent.startsWith('Loading')")
        b.close()
    return {"p50": pct(times, 0.5), "p95": pct(times, 0.95), "pages": len(times)}


def browse_api(server: ServeProcess, pages: int) -> tuple[dict[str, float], list[int]]:
    """p50/p95 ms of GET /api/browse, cursor after cursor; and the ids seen, newest first."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port)
    times, ids, cursor = [], [], None
    for _ in range(pages):
        url = "/api/browse?k=60" + (f"&cursor={cursor}" if cursor else "")
        t0 = time.perf_counter()
        conn.request("GET", url)
        body = json.loads(conn.getresponse().read())
        times.append((time.perf_counter() - t0) * 1000)
        ids += [im["image_id"] for im in body["images"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    conn.close()
    return {"p50": pct(times, 0.5), "p95": pct(times, 0.95), "pages": len(times)}, ids


def zip_throughput(server: ServeProcess, ids: list[int]) -> dict[str, float]:
    """The streamed zip of ``ids`` read to the end: bytes, seconds, MB/s, images/s."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port)
    body = json.dumps({"ids": ids})
    t0 = time.perf_counter()
    conn.request("POST", "/api/download", body=body, headers={
        "Content-Type": "application/json", "Origin": server.url, "Sec-Fetch-Site": "same-origin"})
    r = conn.getresponse()
    size = 0
    while block := r.read(1 << 20):
        size += len(block)
    seconds = time.perf_counter() - t0
    conn.close()
    if r.status != 200:
        raise RuntimeError(f"download: {r.status}")
    return {"bytes": size, "seconds": seconds, "mb_s": size / seconds / 2**20, "images_s": len(ids) / seconds}


def screenshots(server: ServeProcess, chromium: str, folder: Path) -> list[Path]:
    """The page at desktop and phone width: browse, search, detail, a selection."""
    from playwright.sync_api import sync_playwright

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        for name, size in (("desktop", {"width": 1366, "height": 768}), ("phone", {"width": 390, "height": 844})):
            page = b.new_page(viewport=size)

            def shot(what: str, page: object = page, name: str = name) -> None:
                path = folder / f"page-{what}-{name}.png"
                page.wait_for_function(  # type: ignore[attr-defined]
                    "() => [...document.querySelectorAll('#grid .tile img')].slice(0, 12)"
                    ".every(i => i.complete && i.naturalWidth)")
                page.screenshot(path=str(path))  # type: ignore[attr-defined]
                out.append(path)

            page.goto(server.url + "/")
            page.wait_for_selector("#status:has-text('newest first')")
            shot("browse")
            page.fill("#q", "a red circle")
            page.press("#q", "Enter")
            page.wait_for_selector("#status:has-text('results for')")
            shot("search")
            page.focus("#grid .tile[data-index='0']")
            for _ in range(3):
                page.keyboard.press("Space")
                page.keyboard.press("ArrowRight")
            shot("selection")
            page.keyboard.press("Escape")
            page.click("#grid .tile[data-index='1'] img")
            page.wait_for_function("() => document.querySelector('#lb-img').naturalWidth > 0")
            page.screenshot(path=str(folder / f"page-detail-{name}.png"))
            out.append(folder / f"page-detail-{name}.png")
            page.close()
        b.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=10_000, help="generated scenes when the index is built")
    parser.add_argument("--index", type=Path, default=Path("/tmp/bench-page.idx"))
    parser.add_argument("--size", type=int, default=128, help="pixels of a generated scene's side")
    parser.add_argument("--queries", type=int, default=20, help="texts for Enter-to-first-tile")
    parser.add_argument("--pages", type=int, default=20, help="browse pages scrolled")
    parser.add_argument("--zip", type=int, default=2000, help="images in the zip download")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--screenshots", type=Path, default=None, help="also save the page's screenshots here")
    args = parser.parse_args()
    path = ensure_index(args.index, args.count, args.size)
    server = ServeProcess(path)
    try:
        print(f"load average {os.getloadavg()[0]:.1f}", flush=True)
        api, ids = browse_api(server, max(args.pages, args.zip // 60 + 1))
        print(f"GET /api/browse, k=60, cursor after cursor: p50 {api['p50']:.1f} ms, p95 {api['p95']:.1f} ms "
              f"({api['pages']:.0f} pages)", flush=True)
        enter = browser(server, args.chromium, args.queries)
        print(f"Enter to first tile shown: p50 {enter['new_first_p50_ms']:.0f} ms, "
              f"p95 {enter['new_first_p95_ms']:.0f} ms ({args.queries} new texts)", flush=True)
        scroll = browse_scroll(server, args.chromium, args.pages)
        print(f"browse, scrolled to the bottom -> next page's first image shown: p50 {scroll['p50']:.0f} ms, "
              f"p95 {scroll['p95']:.0f} ms ({scroll['pages']:.0f} pages)", flush=True)
        z = zip_throughput(server, ids[:args.zip])
        print(f"zip of {len(ids[:args.zip])} originals: {z['bytes'] / 2**20:.1f} MB in {z['seconds']:.2f} s = "
              f"{z['mb_s']:.0f} MB/s, {z['images_s']:.0f} images/s", flush=True)
        if args.screenshots is not None:
            for shot in screenshots(server, args.chromium, args.screenshots):
                print(f"screenshot {shot} ({shot.stat().st_size // 1024} KB)")
        print(f"load average {os.getloadavg()[0]:.1f}; server memory {server.memory()}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
