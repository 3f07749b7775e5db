"""Defaults shared by the library and the CLI (kept free of heavy imports: the CLI's
``--help`` reads them)."""

from __future__ import annotations

import platform

__all__ = [
    "DEFAULT_CAPTION_MODEL",
    "DEFAULT_CPU_PRECISION",
    "DEFAULT_DUPLICATE_THRESHOLD",
    "DEFAULT_HOST",
    "DEFAULT_ITM_MODEL",
    "DEFAULT_K",
    "DEFAULT_MAX_FILE_MB",
    "DEFAULT_MAX_MEGAPIXELS",
    "DEFAULT_PORT",
    "DEFAULT_POOL",
    "DEFAULT_RERANK_TOP",
    "MAX_KEYWORDS",
    "DEVICES",
    "FUSIONS",
    "PRECISIONS",
    "RERANKERS",
    "SEARCH_MODES",
    "SORT_KEYS",
]

# What ``auto`` means on a CPU for the CLIP image towers and the OCR text detector alike: int8 on
# x86, where ONNX Runtime's int8 kernels (VNNI, or AVX2 with 7-bit weights) are fast; else fp32.
DEFAULT_CPU_PRECISION = "int8" if platform.machine().lower() in ("x86_64", "amd64") else "fp32"

# Larger than any camera sensor sold today (a 200 MP phone, a 150 MP medium format back),
# small enough that a crafted "decompression bomb" cannot exhaust memory.
DEFAULT_MAX_MEGAPIXELS = 250.0

# Files larger than this are recorded as failures without being read: a 250-megapixel
# JPEG is ~100 MB and an uncompressed 8-bit TIFF of that size ~750 MB; anything bigger
# (an 8 GB sparse file named .jpg) would only cost the run its memory.
DEFAULT_MAX_FILE_MB = 1024

# Keywords (or description lines) kept per source of one image, after de-duplication, and the
# most shown with a result: no person tags a photo with more, and every search that returns
# the image shows them, so a packet of 100,000 keywords must not cost each search 100,000 steps.
MAX_KEYWORDS = 500

# Cosine similarity from which two images count as near-identical (scripts/eval_duplicates.py).
DEFAULT_DUPLICATE_THRESHOLD = 0.98

# Candidates the few-shot reranker sees: every image of a small collection, and a
# pool that keeps reranking well under a second on a laptop CPU for large ones.
DEFAULT_POOL = 1000

# --rerank itm re-scores this many top results: BLIP's cross-encoder costs a forward pass
# per image, so it judges a shortlist (the usual retrieve-then-rerank split).
DEFAULT_RERANK_TOP = 50

# BLIP base fine-tuned for COCO captioning: good captions at ViT-B/16 cost (searchindex[caption]).
DEFAULT_CAPTION_MODEL = "Salesforce/blip-image-captioning-base"

# BLIP base's image-text matching head, fine-tuned for COCO retrieval (also --rerank itm's default).
DEFAULT_ITM_MODEL = "Salesforce/blip-itm-base-coco"

# -- choice lists: the library validates against these, and the CLI offers the same ones.

#: Where a model runs (``cuda:N`` is accepted too).
DEVICES = ("auto", "cpu", "cuda")

#: Image-encoding precisions (see :func:`searchindex.models.encoders.resolve_precision`).
PRECISIONS = ("auto", "fp32", "bf16", "int8", "fp16", "onnx")

#: Search modes (see :meth:`searchindex.Index.search`).
SEARCH_MODES = ("auto", "vector", "text", "hybrid")

#: Rerankers a search can ask for (``itm``: BLIP image-text matching, the ``caption`` extra).
RERANKERS = ("itm",)

#: Orders in which search results can be returned.
SORT_KEYS = ("score", "date")

#: How the vector and word rankings are fused: method -> (kind, parameter) (see :mod:`searchindex.search.hybrid`).
FUSIONS: dict[str, tuple[str, float]] = {
    "rrf": ("rrf", 1.0),
    "wrrf": ("rrf", 2.0),
    "blend": ("blend", 0.5),
}

# Results per search when no -k is given (and no score cutoff asks for all that pass).
DEFAULT_K = 10

# `searchindex serve`: loopback only unless --host says otherwise.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
