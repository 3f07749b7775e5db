"""Speed and memory of reading the text in photos: seconds per 12 MP photo with and without text.

Generates photo-like 12 MP JPEGs (4000 x 3000; half show a sign in English or Korean, half no
text), reads them with :class:`searchindex.models.ocr.OcrEngine` alternating the two kinds, and
prints the median wall seconds and CPU seconds (all threads of the process, ``time.process_time``)
per photo of each (decode included), the peak resident memory of the process, and the engines'
versions as JSON.  CPU time is the figure to compare on a shared machine: other work's load
stretches wall time but not it.  With ``--photos N``: the cost of ``index --ocr`` on a first index
of N such photos (the ``add_folder`` time against the ``ocr`` pass after it, tiny-shapes model,
wall and CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402

from tests.support.ocrset import ENGLISH, KOREAN, _background, _render  # noqa: E402


def make_photos(folder: Path, count: int, seed: int, size: tuple[int, int] = (4000, 3000)) -> list[tuple[Path, bool]]:
    """``count`` photos with a sign and ``count`` without, alternating: (path, has text)."""
    rng = random.Random(seed)
    out = []
    for n in range(count):
        lang = "ko" if n % 2 else "en"
        words = rng.sample(KOREAN if lang == "ko" else ENGLISH, 3)
        small = _render(rng, [" ".join(words[:2]), words[2]], lang, "sign", (1000, 750))
        for has_text, img in ((True, small), (False, _background(rng, (1000, 750)))):
            path = folder / f"{'text' if has_text else 'plain'}-{n:03d}.jpg"
            img.resize(size, Image.Resampling.BICUBIC).save(path, quality=90)
            out.append((path, has_text))
    return out


def main() -> None:
    """Parse the options, run the benchmark, print JSON."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=6, help="photos of each kind (with text, without)")
    ap.add_argument("--threads", type=int, default=2, help="engine threads (the 2-core reference)")
    ap.add_argument("--lang", default="ko,en")
    ap.add_argument("--seed", type=int, default=23)
    ap.add_argument("--precision", default="auto", choices=("auto", "int8", "fp32"), help="the text detector's")
    ap.add_argument("--no-baseline", dest="baseline", action="store_false",
                    help="do not also run the fp32 detector on the same photos (alternating) for the ratio")
    ap.add_argument("--photos", "--index-count", dest="photos", type=int, default=0,
                    help="also time a first index + ocr of this many photos (half with text)")
    args = ap.parse_args()

    from searchindex.models.ocr import OcrEngine, engine_versions

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        folder.mkdir()
        photos = make_photos(folder, args.count, args.seed)
        t0 = time.perf_counter()
        engine = OcrEngine(args.lang, threads=args.threads, precision=args.precision)
        engine.read_file(photos[0][0])  # prepares (first time on a machine) and loads the models
        load_s = time.perf_counter() - t0
        engines = {engine.precision: engine}
        if args.baseline and engine.precision != "fp32":
            engines["fp32"] = OcrEngine(args.lang, threads=args.threads, precision="fp32")
            engines["fp32"].read_file(photos[0][0])
        times = {p: {True: [], False: []} for p in engines}
        cpu = {p: {True: [], False: []} for p in engines}
        lines = {p: {True: 0, False: 0} for p in engines}
        for n, (path, has_text) in enumerate(photos):
            # Alternate which engine reads a photo first, so that neither always finds it in the page cache.
            for precision in sorted(engines, reverse=bool(n % 2)):
                t, c = time.perf_counter(), time.process_time()
                found = engines[precision].read_file(path)
                times[precision][has_text].append(time.perf_counter() - t)
                cpu[precision][has_text].append(time.process_time() - c)
                lines[precision][has_text] += len(found)
        result: dict[str, object] = {
            "photos_per_kind": args.count, "threads": args.threads, "langs": args.lang, "detector": engine.precision,
            "first_read_with_model_load_s": round(load_s, 2)}
        for precision in engines:
            result[precision] = {
                "s_per_photo_with_text": round(statistics.median(times[precision][True]), 3),
                "s_per_photo_without_text": round(statistics.median(times[precision][False]), 3),
                "cpu_s_per_photo_with_text": round(statistics.median(cpu[precision][True]), 3),
                "cpu_s_per_photo_without_text": round(statistics.median(cpu[precision][False]), 3),
                "lines_with_text": lines[precision][True], "lines_without_text": lines[precision][False]}
        if len(engines) > 1:
            result["fp32_over_" + engine.precision] = {
                kind: round(statistics.median(times["fp32"][has]) / statistics.median(times[engine.precision][has]), 2)
                for kind, has in (("with_text", True), ("without_text", False))}
        result.update(peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                      load_average=os.getloadavg()[0], engines=engine_versions())
        for each in engines.values():
            each.close()
        if args.photos:
            from searchindex import Index

            many = Path(tmp) / "many"
            many.mkdir()
            make_photos(many, (args.photos + 1) // 2, args.seed + 1)
            with Index.create(Path(tmp) / "idx", model="tiny-shapes", device="cpu") as idx:
                t, c = time.perf_counter(), time.process_time()
                idx.add_folder(many)
                index_s, index_cpu = time.perf_counter() - t, time.process_time() - c
                t, c = time.perf_counter(), time.process_time()
                summary = idx.ocr(args.lang, threads=args.threads, precision=args.precision)
                ocr_s, ocr_cpu = time.perf_counter() - t, time.process_time() - c
            result["index_time"] = {"photos": summary.read, "index_s": round(index_s, 1), "ocr_s": round(ocr_s, 1),
                                    "index_cpu_s": round(index_cpu, 1), "ocr_cpu_s": round(ocr_cpu, 1),
                                    "ocr_over_index": round(ocr_s / index_s, 2) if index_s else None}
        result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(result, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
