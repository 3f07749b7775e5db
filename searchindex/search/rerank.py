"""Image-text matching rerank (``rerank="itm"``): BLIP's cross-encoder re-scores the top of a ranking."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from ..models.session import ModelSession
from ..results import SearchResult

__all__ = ["rerank_itm"]

log = logging.getLogger(__name__)


def rerank_itm(models: ModelSession, results: list[SearchResult], text: str, top: int,
               model: str | None) -> list[SearchResult]:
    """Re-score the first ``top`` results with BLIP's image-text matching head and reorder them by it.

    ``score`` becomes the match probability; results whose file cannot be read
    any more keep their place after the scored ones.

    Raises:
        MissingExtraError: transformers is not installed.
    """
    head, tail = results[:top], results[top:]
    if not head:
        return results
    from ..models.images import decode_image  # Pillow: only when a rerank runs

    scorer = models.itm_scorer(model)
    images, usable = [], []
    for r in head:
        try:
            images.append(decode_image(Path(r.path).read_bytes(), r.path).image)
            usable.append(r)
        except Exception as exc:  # gone or changed since indexing: keep it, unscored, after the others
            log.info("cannot rerank %s: %s", r.path, getattr(exc, "reason", exc))
    probs = np.asarray(scorer.score(images, text), dtype=np.float64).reshape(-1) if images else np.zeros(0)
    order = np.argsort(-probs, kind="stable")
    scored = [dataclasses.replace(usable[i], score=float(probs[i])) for i in order]
    rest = [r for r in head if r not in usable] + tail
    return [dataclasses.replace(r, rank=n) for n, r in enumerate(scored + rest, 1)]
