"""Recall of reading the text in the generated OCR set, by language, distortion and kind.

Writes the suite's generated set (``tests/support/ocrset.py``: signs, screenshots, receipts and
pages in English and Korean, turned, tilted, blurred, JPEG-compressed or small, plus text-free
photos) for each seed, reads every image with :class:`searchindex.models.ocr.OcrEngine` and counts
a query word as found when it is in the text read from its image (no search: the reading alone).
Prints JSON: found/total per group, the lines read in text-free photos, CPU seconds, the misses.
``--samples``: instead, the lines read in each sample picture of scikit-image and matplotlib.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import unicodedata
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.ocrset import write_ocrset  # noqa: E402


def read_samples(engine: object) -> dict[str, list[list[object]]]:
    """{picture: [[text, confidence], ...]} for the PNG and JPEG samples of scikit-image and matplotlib:
    pictures nobody generated (a scanned page, a name tag, handwriting, and photos without text)."""
    import matplotlib
    import skimage

    folders = [Path(skimage.data_dir), Path(matplotlib.get_data_path()) / "sample_data"]
    out = {}
    for path in sorted(p for folder in folders for p in folder.iterdir() if p.suffix in (".png", ".jpg")):
        lines = engine.read_file(path)  # type: ignore[attr-defined]
        out[path.name] = [[ln.text, ln.confidence] for ln in lines]
    return out


def main() -> None:
    """Parse the options, read the sets, print JSON."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--precision", default="auto", choices=("auto", "int8", "fp32"), help="the text detector's")
    ap.add_argument("--seeds", default="2026,777", help="one generated set per seed")
    ap.add_argument("--per-lang", type=int, default=32, help="images per language and seed")
    ap.add_argument("--text-free", type=int, default=16, help="text-free photos per seed")
    ap.add_argument("--lang", default="ko,en")
    ap.add_argument("--samples", action="store_true",
                    help="instead: read the sample pictures of scikit-image and matplotlib (PNG, JPEG) and print "
                         "the lines read in each")
    args = ap.parse_args()

    from searchindex.models.ocr import OcrEngine

    engine = OcrEngine(args.lang, threads=2, precision=args.precision)
    if args.samples:
        print(json.dumps({"detector": engine.precision, "pictures": read_samples(engine)}, indent=1,
                         ensure_ascii=False))
        return
    found: dict[str, list[bool]] = defaultdict(list)
    missed: list[str] = []
    free_lines = 0
    cpu = 0.0
    for seed in (int(s) for s in args.seeds.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            for sample in write_ocrset(folder, args.per_lang, args.text_free, seed=seed):
                c = time.process_time()
                lines = engine.read_file(folder / sample.file)
                cpu += time.process_time() - c
                if sample.lang == "none":
                    free_lines += len(lines)
                    continue
                text = unicodedata.normalize("NFC", " ".join(ln.text for ln in lines)).lower()
                for word in sample.words:
                    ok = word.lower() in text
                    for group in (sample.lang, f"{sample.lang}:{sample.distortion}", f"{sample.lang}:{sample.kind}"):
                        found[group].append(ok)
                    if not ok:
                        missed.append(f"{word} in {sample.file} (seed {seed}): read {text!r}")
    counts = {k: f"{sum(v)}/{len(v)}" for k, v in sorted(found.items())}
    report = {"detector": engine.precision, "found": counts, "lines_in_text_free_photos": free_lines,
              "cpu_s": round(cpu, 1), "missed": missed}
    print(json.dumps(report, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
