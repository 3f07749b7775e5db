#!/usr/bin/env python3
"""Measure few-shot reranking against two baselines on held-out synthetic shapes.

Indexes images from a seed the trainer never used through ``searchindex.Index``
and runs 24 intents whose query text is broader than what is meant (query "a
photo of a circle", intent "large circles on sand"), over 5 seeds.  For n shots,
n liked examples are drawn from the intent's images and n unliked ones from the
query's other matches; the shots are left out of the ranking.  Every method
reranks the same pool (the query's top ``--pool`` CLIP candidates) and is scored
by precision@10 for the intent:

- reranker: ``searchindex.search.fewshot.FewShotReranker`` (gated cross-attention);
- rocchio:  query + mean(likes) - mean(unlikes);
- probe:    logistic regression (L2, C=1) fitted on the shots alone.

Prints the table, the reranker's fitting time for 32 shots and 1,000 candidates,
and writes the curves to a PNG.

    python scripts/eval_fewshot.py                      # tiny-shapes, 3,000 images, seed 2026
    python scripts/eval_fewshot.py --png docs/fewshot.png
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from evalargs import held_out_parser  # noqa: E402

from searchindex import Index  # noqa: E402
from searchindex.demo.synthetic import write_dataset  # noqa: E402
from searchindex.search.fewshot import FewShotReranker, rocchio_scores  # noqa: E402

Attrs = dict[str, str]


def intents() -> list[tuple[str, Attrs, Attrs]]:
    """(query text, attributes the query names, attributes of the intent)."""
    out: list[tuple[str, Attrs, Attrs]] = []
    for shape, size, bg in [("circle", "large", "sand"), ("square", "small", "grass"),
                            ("triangle", "large", "night"), ("star", "small", "concrete"),
                            ("cross", "large", "grass")]:
        out.append((f"a photo of a {shape}", {"shape": shape}, {"shape": shape, "size": size, "background": bg}))
    for shape, color in [("circle", "red"), ("square", "blue"), ("triangle", "yellow"), ("star", "green"),
                         ("cross", "purple")]:
        out.append((f"a photo of a {shape}", {"shape": shape}, {"shape": shape, "color": color}))
    for color, shape in [("red", "star"), ("blue", "circle"), ("green", "triangle"), ("orange", "square"),
                         ("white", "cross")]:
        out.append((f"something {color}", {"color": color}, {"color": color, "shape": shape}))
    for color, shape, size in [("red", "circle", "large"), ("blue", "square", "small"), ("yellow", "star", "large"),
                               ("green", "cross", "small"), ("pink", "triangle", "large")]:
        out.append((f"a photo of a {color} {shape}", {"color": color, "shape": shape},
                    {"color": color, "shape": shape, "size": size}))
    for bg, shape in [("sand", "circle"), ("grass", "star"), ("night", "square"), ("concrete", "triangle")]:
        out.append((f"a photo of {bg}", {"background": bg}, {"background": bg, "shape": shape}))
    return out


def probe_scores(cand: np.ndarray, likes: np.ndarray, unlikes: np.ndarray, c: float = 1.0) -> np.ndarray:
    """Logistic regression on the shots (Newton steps, L2 penalty 1/C, free bias); the candidates' logits."""
    x = np.vstack([likes, unlikes]).astype(np.float64)
    y = np.r_[np.ones(len(likes)), np.zeros(len(unlikes))]
    xb = np.c_[x, np.ones(len(x))]
    reg = np.r_[np.full(x.shape[1], 1.0 / c), 1e-8]
    w = np.zeros(xb.shape[1])
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-(xb @ w)))
        grad = xb.T @ (p - y) + reg * w
        hess = (xb.T * (p * (1 - p))) @ xb + np.diag(reg)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return np.c_[cand, np.ones(len(cand))] @ w


def precision_at(scores: np.ndarray, relevant: np.ndarray, exclude: np.ndarray, k: int = 10) -> float:
    s = np.where(exclude, -np.inf, scores)
    top = np.argsort(-s, kind="stable")[:k]
    return float(relevant[top].mean())


def plot(path: Path, shots: list[int], table: dict[str, list[float]], title: str) -> None:
    """A small line chart with Pillow (no plotting dependency)."""
    from PIL import Image, ImageDraw

    w, h, left, right, top, bottom = 560, 360, 60, 150, 30, 50
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    x0, x1, y0, y1 = left, w - right, h - bottom, top

    def xy(i: int, v: float) -> tuple[float, float]:
        return x0 + (x1 - x0) * i / (len(shots) - 1), y0 + (y1 - y0) * v

    for v in np.linspace(0, 1, 6):
        _, y = xy(0, v)
        d.line([(x0, y), (x1, y)], fill=(225, 225, 225))
        d.text((x0 - 35, y - 6), f"{v:.1f}", fill="black")
    for i, n in enumerate(shots):
        x, _ = xy(i, 0)
        d.text((x - 3, y0 + 8), str(n), fill="black")
    d.rectangle([x0, y1, x1, y0], outline="black")
    d.text((x0 + (x1 - x0) // 2 - 60, h - 22), "shots per label (likes = unlikes)", fill="black")
    d.text((x0, 8), title, fill="black")
    colours = {"reranker": (200, 40, 40), "rocchio": (40, 90, 200), "probe": (60, 150, 60)}
    for j, (name, values) in enumerate(table.items()):
        colour = colours.get(name, (0, 0, 0))
        pts = [xy(i, v) for i, v in enumerate(values)]
        d.line(pts, fill=colour, width=3)
        for x, y in pts:
            d.ellipse([x - 4, y - 4, x + 4, y + 4], fill=colour)
        d.line([(x1 + 15, y1 + 20 + 20 * j), (x1 + 40, y1 + 20 + 20 * j)], fill=colour, width=3)
        d.text((x1 + 46, y1 + 14 + 20 * j), name, fill="black")
    d.text((x1 + 15, y1 + 90), "precision@10", fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, optimize=True)


def main(argv: list[str] | None = None) -> int:
    ap: argparse.ArgumentParser = held_out_parser(__doc__, count=3000)
    ap.add_argument("--seeds", type=int, default=5, help="shot draws per intent")
    ap.add_argument("--shots", default="0,1,2,4,8", help="shots per label to evaluate")
    ap.add_argument("--pool", type=int, default=1000, help="CLIP candidates every method reranks")
    ap.add_argument("--png", type=Path, default=None, help="write the curves here")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = ap.parse_args(argv)
    shot_counts = [int(s) for s in args.shots.split(",")]

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        truth = {str((folder / r["file"]).absolute()): r for r in write_dataset(folder, args.count, args.seed)}
        with Index.create(Path(tmp) / "idx", model=args.model, pretrained=args.pretrained, device="cpu") as index:
            index.add_folder(folder)
            vecs = index.vectors.current()
            rows = index.catalog.read.records(int(i) for i in vecs.ids())
            id_truth = {i: truth[r.path] for i, r in rows.items()}
            queries = {text: index.encoder.encode_texts([text])[0] for text, _, _ in intents()}
            pools = {}
            for text, q in queries.items():
                scores, ids = vecs.search(q[None, :], args.pool)
                pools[text] = (ids[0], scores[0].astype(np.float64), vecs.vectors(ids[0]).astype(np.float64))

    reranker = FewShotReranker()
    methods: dict[str, Callable[..., np.ndarray]] = {
        "reranker": lambda q, base, cand, li, ui, ex: reranker.fit_scores(
            q, cand, cand[li], cand[ui], base_scores=base, exclude=ex)[0],
        "rocchio": lambda q, base, cand, li, ui, ex: rocchio_scores(q, cand, cand[li], cand[ui]),
        "probe": lambda q, base, cand, li, ui, ex: probe_scores(cand, cand[li], cand[ui]),
    }
    results = {m: {n: [] for n in shot_counts} for m in methods}
    per_intent = []
    for number, (text, query_attrs, intent_attrs) in enumerate(intents()):
        ids, base, cand = pools[text]
        labels = [id_truth[int(i)] for i in ids]
        relevant = np.array([all(lab[k] == v for k, v in intent_attrs.items()) for lab in labels])
        others = np.array([all(lab[k] == v for k, v in query_attrs.items()) for lab in labels]) & ~relevant
        if relevant.sum() < max(shot_counts) + 10:
            raise SystemExit(f"intent {intent_attrs} has only {relevant.sum()} images in the pool; use more --count")
        q = queries[text].astype(np.float64)
        row = {"query": text, "intent": intent_attrs, "positives": int(relevant.sum())}
        for seed in range(args.seeds):
            rng = np.random.default_rng([seed, number])
            pos = rng.permutation(np.flatnonzero(relevant))
            neg = rng.permutation(np.flatnonzero(others))
            for n in shot_counts:
                li, ui = pos[:n], neg[:n]
                exclude = np.zeros(len(ids), bool)
                exclude[li] = exclude[ui] = True
                for name, method in methods.items():
                    scores = base if n == 0 else method(q, base, cand, li, ui, exclude)
                    results[name][n].append(precision_at(scores, relevant, exclude))
        per_intent.append(row)

    table = {m: [float(np.mean(results[m][n])) for n in shot_counts] for m in methods}

    # Fitting time: 16 likes + 16 unlikes over 1,000 candidates, median of 7 runs.
    ids, base, cand = pools[intents()[0][0]]
    cand, base = cand[:1000], base[:1000]
    q = queries[intents()[0][0]].astype(np.float64)
    times = []
    for _ in range(7):
        t = time.perf_counter()
        reranker.fit_scores(q, cand, cand[:16], cand[-16:], base_scores=base)
        times.append(time.perf_counter() - t)
    fit_ms = 1000 * float(np.median(times))
    seconds = time.perf_counter() - t0

    if args.png:
        plot(args.png, shot_counts, table,
             f"{args.model}: {len(intents())} intents x {args.seeds} seeds, {len(truth)} held-out images")
    if args.json:
        print(json.dumps({"model": args.model, "images": len(truth), "seed": args.seed, "intents": len(intents()),
                          "seeds": args.seeds, "shots": shot_counts, "precision_at_10": table,
                          "fit_ms_32_shots_1000_candidates": round(fit_ms, 1), "seconds": round(seconds, 1)}))
        return 0
    print(f"precision@10 for the intent, {len(intents())} intents x {args.seeds} seeds, "
          f"{len(truth)} held-out images (seed {args.seed}), pool {args.pool}")
    print(f"{'shots per label':<16}" + "".join(f"{n:>7}" for n in shot_counts))
    for name, values in table.items():
        print(f"{name:<16}" + "".join(f"{v:>7.3f}" for v in values))
    print(f"reranker fit for 32 shots x {len(cand)} candidates: {fit_ms:.0f} ms (median of 7, CPU)")
    print(f"[{seconds:.1f} s]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
