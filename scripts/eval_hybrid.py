#!/usr/bin/env python3
"""Measure hybrid search: keywords no pixel shows, and CLIP precision kept.

Generates held-out shape images; 10 groups of 10 of them get keywords that no
pixel shows (names, events: "grandma", "Oktoberfest 2019", ...), written the ways
people write them: ``photo.png.txt``, ``photo.txt``, ``photo.xmp`` sidecars and
XMP embedded in the PNG.  One group, "Red Star Brewery tour", names a colour and a
shape on purpose: it competes with the query "a photo of a red star".

Both folders (with and without keywords) are indexed through
``searchindex.Index`` with the same model; then:

- recall@10 of the 10 keyword queries (each group's keyword, e.g. "Oktoberfest
  2019") for vector-only, text-only and hybrid search, one row per fusion method
  of :data:`searchindex.search.hybrid.FUSIONS`;
- precision@10 of the 40 queries "a photo of a {color} {shape}" for vector-only
  and hybrid search, on the index without keywords and on the one with them.

    python scripts/eval_hybrid.py            # tiny-shapes, 1,000 images, seed 2026
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from evalargs import held_out_parser  # noqa: E402

from searchindex import Index  # noqa: E402
from searchindex.defaults import FUSIONS  # noqa: E402
from searchindex.demo.synthetic import COLORS, SHAPES, write_dataset  # noqa: E402
from searchindex.search.hybrid import DEFAULT_FUSION  # noqa: E402

#: Keywords of the groups: people and events, one naming a colour and a shape.
GROUPS = (
    "grandma", "Oktoberfest 2019", "Aunt Clara", "Lisbon trip 2022", "Ben and Mia wedding",
    "graduation day", "Red Star Brewery tour", "Blue Lagoon holiday", "kindergarten farewell",
    "Christmas at the cabin",
)
GROUP_SIZE = 10
K = 10


def _xmp(keywords: list[str]) -> str:
    items = "".join(f"<rdf:li>{k}</rdf:li>" for k in keywords)
    return ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            '<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:subject><rdf:Bag>'
            f"{items}</rdf:Bag></dc:subject></rdf:Description></rdf:RDF></x:xmpmeta>")


def write_keywords(folder: Path, files: list[str], seed: int) -> dict[str, set[str]]:
    """Give 10 random groups of images their keyword, each group stored one of four ways.

    Returns keyword -> absolute paths of its images.
    """
    from PIL import Image, PngImagePlugin

    rng = random.Random(seed)
    chosen = rng.sample(files, len(GROUPS) * GROUP_SIZE)
    truth: dict[str, set[str]] = {}
    for g, keyword in enumerate(GROUPS):
        members = chosen[g * GROUP_SIZE:(g + 1) * GROUP_SIZE]
        truth[keyword] = {str((folder / f).absolute()) for f in members}
        for f in members:
            image = folder / f
            way = g % 4
            if way == 0:
                Path(str(image) + ".txt").write_text(f"{keyword}\n", encoding="utf-8")
            elif way == 1:
                image.with_suffix(".txt").write_text(f"Photo from {keyword}", encoding="utf-8")
            elif way == 2:
                image.with_suffix(".xmp").write_text(_xmp([keyword, "family"]), encoding="utf-8")
            else:  # embedded XMP: same pixels, new file
                info = PngImagePlugin.PngInfo()
                info.add_itxt("XML:com.adobe.xmp", _xmp([keyword]))
                with Image.open(image) as im:
                    im.load()
                    im.save(image, pnginfo=info)
    return truth


def evaluate(index: Index, truth_labels: dict[str, dict[str, str]], keywords: dict[str, set[str]] | None,
             modes: list[tuple[str, str, str]]) -> dict[str, object]:
    """precision@10 of colour-shape queries and (with keywords) recall@10 of keyword queries, per mode."""
    out: dict[str, object] = {}
    precision: dict[str, list[float]] = {}
    for color in COLORS:
        for shape in SHAPES:
            for label, mode, fusion in modes:
                if mode == "text":
                    continue
                got = index.search(f"a photo of a {color} {shape}", k=K, mode=mode, fusion=fusion)
                hits = sum(truth_labels[r.path]["color"] == color and truth_labels[r.path]["shape"] == shape
                           for r in got)
                precision.setdefault(label, []).append(hits / K)
    out["precision_at_10"] = {label: round(float(np.mean(v)), 4) for label, v in precision.items()}
    base = np.array(precision["vector"])
    out["worst_query_drop"] = {label: round(float((base - np.array(v)).max()), 4)
                               for label, v in precision.items() if label != "vector"}
    if keywords:
        recall: dict[str, list[float]] = {}
        for keyword, members in keywords.items():
            for label, mode, fusion in modes:
                got = index.search(keyword, k=K, mode=mode, fusion=fusion)
                recall.setdefault(label, []).append(len({r.path for r in got} & members) / len(members))
        out["recall_at_10"] = {label: round(float(np.mean(v)), 4) for label, v in recall.items()}
        out["recall_min"] = {label: round(float(np.min(v)), 4) for label, v in recall.items()}
    return out


def main(argv: list[str] | None = None) -> int:
    ap: argparse.ArgumentParser = held_out_parser(__doc__, count_help="held-out images (at least 100)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    args = ap.parse_args(argv)
    if args.count < len(GROUPS) * GROUP_SIZE:
        ap.error(f"--count must be at least {len(GROUPS) * GROUP_SIZE}")

    modes = [("vector", "vector", "rrf"), ("text", "text", "rrf")]
    modes += [(f"hybrid {name}", "hybrid", name) for name in FUSIONS]
    t0 = time.perf_counter()
    out: dict[str, object] = {"model": args.model, "seed": args.seed, "images": args.count,
                              "groups": len(GROUPS), "group_size": GROUP_SIZE, "default_fusion": DEFAULT_FUSION}
    with tempfile.TemporaryDirectory() as tmp:
        plain = Path(tmp) / "plain"
        rows = write_dataset(plain, args.count, args.seed)
        tagged = Path(tmp) / "tagged"
        shutil.copytree(plain, tagged)
        keywords = write_keywords(tagged, [r["file"] for r in rows], args.seed)
        for name, folder, kw in (("without_keywords", plain, None), ("with_keywords", tagged, keywords)):
            labels = {str((folder / r["file"]).absolute()): r for r in rows}
            with Index.create(Path(tmp) / f"{name}.idx", model=args.model, pretrained=args.pretrained,
                              device="cpu") as index:
                index.add_folder(folder)
                out[name] = evaluate(index, labels, kw, modes)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"hybrid search, {args.model}, {args.count} held-out images (seed {args.seed}), "
          f"{len(GROUPS)} keyword groups of {GROUP_SIZE}")
    with_kw: dict[str, dict[str, float]] = out["with_keywords"]  # type: ignore[assignment]
    without: dict[str, dict[str, float]] = out["without_keywords"]  # type: ignore[assignment]
    print(f"{'ranking':<14} {'kw recall@10':>12} {'(worst)':>8} {'P@10 with kw':>13} {'P@10 no kw':>11}")
    for label, _, _ in modes:
        rec = with_kw["recall_at_10"].get(label)
        worst = with_kw["recall_min"].get(label)
        p_with = with_kw["precision_at_10"].get(label)
        p_without = without["precision_at_10"].get(label)
        print(f"{label:<14} {_fmt(rec):>12} {_fmt(worst):>8} {_fmt(p_with):>13} {_fmt(p_without):>11}")
    print(f"largest per-query precision drop against vector (with keywords): {with_kw['worst_query_drop']}")
    print(f"[{out['seconds']} s]")
    return 0


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


if __name__ == "__main__":
    raise SystemExit(main())
