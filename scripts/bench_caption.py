#!/usr/bin/env python3
"""Caption throughput and ITM rerank cost of BLIP base-sized models (random weights, no download).

Builds ``BlipForConditionalGeneration`` and ``BlipForImageTextRetrieval`` in memory
from BLIP base's configuration (ViT-B/16 at 384 px, 12-layer BERT text side, a
30,524-token vocabulary written locally), so the arithmetic is that of
``Salesforce/blip-image-captioning-base`` / ``blip-itm-base-coco``; only the words
are meaningless.  Random weights almost never emit the end token, and the run
forces every caption to exactly ``--max-new-tokens`` tokens anyway
(``min_new_tokens``), so the figures are for full-length captions: real captions
(often 8-12 tokens) finish sooner.

Captioning: images/s through :class:`searchindex.models.captioners.TransformersCaptioner`
(preprocessing included) for each batch size and beam count, after a one-image warm-up
image, with the ratio to the first setting (batch 1, greedy) of the same run.
ITM: seconds per query to score ``--itm-n`` images against one text with
:class:`searchindex.models.captioners.ItmScorer`, next to the vision tower alone on the
same images (the share of the cost that is image encoding).

    python scripts/bench_caption.py                          # batches 1,4,16; beams 1,3; N=50
    python scripts/bench_caption.py --batch-sizes 1,8 --beams 1 --images 8 --device cuda
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the BLIP builders live with the tests, outside the package

from searchindex.models.captioners import ItmScorer, TransformersCaptioner  # noqa: E402
from searchindex.models.encoders import resolve_device  # noqa: E402
from tests.support.blip import BASE_VOCAB_SIZE, blip_config, blip_processor, write_vocab  # noqa: E402


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def photos(n: int, seed: int = 0) -> list[Image.Image]:
    """Seeded 640x480 RGB images (smooth colour fields plus noise; content does not change the cost)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        base = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
        im = Image.fromarray(base).resize((640, 480), Image.BILINEAR)
        noise = rng.integers(-12, 13, size=(480, 640, 3))
        out.append(Image.fromarray(np.clip(np.asarray(im, dtype=np.int16) + noise, 0, 255).astype(np.uint8)))
    return out


def build(cls: type, tokens: list[str], device: str) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = cls(blip_config("base", tokens))
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    return model.to(device, dtype=dtype).eval()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bench_captions(args: argparse.Namespace, tokens: list[str], processor: object, device: str) -> list[dict]:
    from transformers import BlipForConditionalGeneration

    model = build(BlipForConditionalGeneration, tokens, device)
    for cfg in (model.generation_config, model.text_decoder.generation_config):
        cfg.min_new_tokens = args.max_new_tokens  # full-length captions (see the module docstring)
    rows: list[dict] = []
    for beams in args.beams:
        for bs in args.batch_sizes:
            cap = TransformersCaptioner(model, processor, "blip-base-random", max_new_tokens=args.max_new_tokens,
                                        num_beams=beams)
            n = max(bs, args.images // bs * bs)
            images = photos(n + 1, seed=bs)
            cap.caption(images[:1])  # warm-up: allocator, kernels, first-call costs
            sync(device)
            t0 = time.perf_counter()
            words = []
            for start in range(1, n + 1, bs):
                words += [len(c.split()) for c in cap.caption(images[start:start + bs])]
            sync(device)
            seconds = time.perf_counter() - t0
            row = {"batch_size": bs, "num_beams": beams, "images": n, "seconds": round(seconds, 2),
                   "images_per_s": round(n / seconds, 3), "words_per_caption": statistics.mean(words)}
            rows.append(row)
            log(f"  batch {bs:>3}, beams {beams}: {n} images in {seconds:.1f} s = {n / seconds:.3f} images/s")
    base = rows[0]["images_per_s"]
    for row in rows:
        row["ratio_to_first"] = round(row["images_per_s"] / base, 2)
    return rows


def bench_itm(args: argparse.Namespace, tokens: list[str], processor: object, device: str) -> dict:
    from transformers import BlipForImageTextRetrieval

    model = build(BlipForImageTextRetrieval, tokens, device)
    scorer = ItmScorer(model, processor, "blip-itm-base-random", batch_size=args.itm_batch)
    images = photos(args.itm_n, seed=1234)
    scorer.score(images[:2], "a warm-up query")
    pixels = processor.image_processor(images, return_tensors="pt")["pixel_values"]
    per_query, vision = [], []
    for q in range(args.itm_queries):
        sync(device)
        t0 = time.perf_counter()
        scores = scorer.score(images, f"a photo of a dog on a beach number {q}")
        sync(device)
        per_query.append(time.perf_counter() - t0)
        assert scores.shape == (args.itm_n,)
        t0 = time.perf_counter()
        with torch.inference_mode():
            for start in range(0, args.itm_n, args.itm_batch):
                model.vision_model(pixel_values=pixels[start:start + args.itm_batch].to(
                    device, dtype=next(model.parameters()).dtype))
        sync(device)
        vision.append(time.perf_counter() - t0)
    q, v = statistics.median(per_query), statistics.median(vision)
    log(f"  ITM, {args.itm_n} images x 1 text: {q:.2f} s per query ({1000 * q / args.itm_n:.0f} ms per image); "
        f"vision tower alone {v:.2f} s ({v / q:.0%} of it)")
    return {"n": args.itm_n, "queries": args.itm_queries, "seconds_per_query": round(q, 3),
            "ms_per_image": round(1000 * q / args.itm_n, 1), "vision_seconds": round(v, 3),
            "vision_share": round(v / q, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch-sizes", default="1,4,16", help="Comma-separated caption batch sizes.")
    ap.add_argument("--beams", default="1,3", help="Comma-separated beam counts (1 = greedy).")
    ap.add_argument("--images", type=int, default=16,
                    help="Images timed per setting (rounded down to whole batches, at least one).")
    ap.add_argument("--max-new-tokens", type=int, default=20)
    ap.add_argument("--itm-n", type=int, default=50, help="Candidates re-scored per ITM query.")
    ap.add_argument("--itm-queries", type=int, default=2, help="ITM queries timed (the median is reported).")
    ap.add_argument("--itm-batch", type=int, default=16, help="Images per ITM forward pass.")
    ap.add_argument("--skip-captions", action="store_true")
    ap.add_argument("--skip-itm", action="store_true")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto (fp16 on CUDA).")
    ap.add_argument("--json", action="store_true", help="Print the results as one JSON object.")
    args = ap.parse_args()
    args.batch_sizes = [int(x) for x in args.batch_sizes.split(",")]
    args.beams = [int(x) for x in args.beams.split(",")]
    device = resolve_device(args.device)
    torch.set_grad_enabled(False)
    log(f"device {device} ({torch.get_num_threads()} threads), torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        vocab = Path(tmp) / "vocab.txt"
        tokens = write_vocab(vocab, BASE_VOCAB_SIZE)
        processor = blip_processor(vocab, image_size=384)
        result: dict = {"device": device, "threads": torch.get_num_threads(), "max_new_tokens": args.max_new_tokens}
        if not args.skip_captions:
            log("captioning (BLIP base shapes, random weights):")
            result["captions"] = bench_captions(args, tokens, processor, device)
        if not args.skip_itm:
            log("ITM rerank (BlipForImageTextRetrieval base shapes, random weights):")
            result["itm"] = bench_itm(args, tokens, processor, device)
    if args.json:
        print(json.dumps(result))
        return
    for row in result.get("captions", []):
        print(f"caption batch={row['batch_size']:<3} beams={row['num_beams']}  {row['images_per_s']:.3f} images/s  "
              f"x{row['ratio_to_first']:.2f} vs batch={result['captions'][0]['batch_size']} "
              f"beams={result['captions'][0]['num_beams']}  ({row['images']} images, {row['seconds']} s)")
    if "itm" in result:
        itm = result["itm"]
        print(f"itm N={itm['n']}  {itm['seconds_per_query']:.2f} s per query ({itm['ms_per_image']} ms per image); "
              f"vision tower alone {itm['vision_seconds']:.2f} s = {itm['vision_share']:.0%} of it")


if __name__ == "__main__":
    main()
