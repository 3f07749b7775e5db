#!/usr/bin/env python3
"""Measure zero-shot tagging with a model on held-out synthetic shapes.

Generates images from a seed the trainer never used, indexes them through
``searchindex.Index``, then classifies every image's stored embedding among the
5 shapes and among the 8 colours with the single template "a photo of a {}." and
with the default template ensemble: accuracy and log-loss (softmax over the
classes at the model's logit scale).  Then it tags every image with all 19
attribute labels at once through ``Index.tag`` (the calibrated thresholds) and
reports tag precision, recall and macro F1 against the ground truth.

    python scripts/eval_zeroshot.py            # tiny-shapes, 1,000 images, seed 2026
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from evalargs import held_out_parser  # noqa: E402

from searchindex import Index  # noqa: E402
from searchindex.demo.synthetic import BACKGROUNDS, COLORS, SHAPES, SIZES, write_dataset  # noqa: E402
from searchindex.enrich.tagging import DEFAULT_TEMPLATES, SINGLE_TEMPLATE, label_classifier  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap: argparse.ArgumentParser = held_out_parser(__doc__)
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    out: dict[str, object] = {"model": args.model, "seed": args.seed}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        truth = {str((folder / r["file"]).absolute()): r for r in write_dataset(folder, args.count, args.seed)}
        with Index.create(Path(tmp) / "idx", model=args.model, pretrained=args.pretrained, device="cpu") as index:
            index.add_folder(folder)
            ids = {r.path: r.id for r in index.catalog.read.records(range(1, 10 * args.count)).values()}
            paths = sorted(ids)
            emb = index.catalog.read.embeddings([ids[p] for p in paths], index.dim)
            vectors = np.stack([emb[ids[p]] for p in paths]).astype(np.float64)
            enc = index.encoder
            model = getattr(enc, "_model", None)  # the model's own softmax temperature, for the log-loss
            scale = float(model.logit_scale.detach().exp()) if hasattr(model, "logit_scale") else 100.0
            rows = []
            for attr, classes in (("shape", list(SHAPES)), ("color", list(COLORS))):
                target = np.array([classes.index(truth[p][attr]) for p in paths])
                for name, templates in (("single", SINGLE_TEMPLATE), ("ensemble", DEFAULT_TEMPLATES)):
                    w = np.stack([label_classifier(enc, c, templates) for c in classes]).astype(np.float64)
                    logits = scale * vectors @ w.T
                    acc = float((logits.argmax(1) == target).mean())
                    logits -= logits.max(1, keepdims=True)
                    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
                    nll = float(-logp[np.arange(len(target)), target].mean())
                    rows.append({"attribute": attr, "classes": len(classes), "templates": name,
                                 "n_templates": len(templates), "accuracy": round(acc, 4), "log_loss": round(nll, 4)})
            out["classification"] = rows

            attrs = {**{s: "shape" for s in SHAPES}, **{c: "color" for c in COLORS},
                     **{s: "size" for s in SIZES}, **{b: "background" for b in BACKGROUNDS}}
            reports = index.tag(list(attrs))
            tagged = index.catalog.read.tags(ids.values())
            by_id = {v: k for k, v in ids.items()}
            tp = fp = fn = 0
            f1s = {}
            for label, attr in attrs.items():
                got = {by_id[i] for i, tags in tagged.items() if label in {t for t, _ in tags}}
                want = {p for p in paths if truth[p][attr] == label}
                a, b, c = len(got & want), len(got - want), len(want - got)
                tp, fp, fn = tp + a, fp + b, fn + c
                f1s[label] = 2 * a / max(1, 2 * a + b + c)
            out["tags"] = {
                "labels": len(attrs), "precision": round(tp / max(1, tp + fp), 4),
                "recall": round(tp / max(1, tp + fn), 4),
                "macro_f1": round(float(np.mean(list(f1s.values()))), 4),
                "worst": min(f1s, key=f1s.get), "worst_f1": round(min(f1s.values()), 4),
                "split_calibrated": sum(r.calibrated for r in reports),
            }
    out["images"] = len(paths)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"zero-shot classification, {args.model}, {len(paths)} held-out images (seed {args.seed})")
    print(f"{'attribute':<10} {'templates':<16} {'accuracy':>8} {'log-loss':>9}")
    for r in rows:
        print(f"{r['attribute'] + ' (' + str(r['classes']) + ')':<10} "
              f"{r['templates'] + ' (' + str(r['n_templates']) + ')':<16} {r['accuracy']:>8.3f} {r['log_loss']:>9.4f}")
    t = out["tags"]
    print(f"\ntagging with all {t['labels']} attribute labels at once (calibrated thresholds, "  # type: ignore[index]
          f"{t['split_calibrated']} from a two-group split): precision {t['precision']:.3f}, "  # type: ignore[index]
          f"recall {t['recall']:.3f}, macro F1 {t['macro_f1']:.3f} (worst: {t['worst']} {t['worst_f1']:.3f})")  # type: ignore[index]
    print(f"[{out['seconds']} s]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
