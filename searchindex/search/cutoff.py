"""The adaptive relevance cutoff (``--threshold auto``): where the results that stand out end.

Plain NumPy over a ranked list of scores (and optionally a background sample of
scores of random images); :class:`searchindex.search.searcher.Searcher` feeds it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["AUTO_MIN_SIGNIFICANCE", "AUTO_WINDOW", "AUTO_Z_FALLBACK", "auto_cutoff"]

#: Below-gap window: each gap is compared with the mean of this many (rank-scaled) gaps after it.
AUTO_WINDOW = 32
#: A gap counts as a break when it is this many times larger than expected from the scores below it.
AUTO_MIN_SIGNIFICANCE = 10.0
#: Fallback when no break exists: keep scores this many robust standard deviations above the background.
AUTO_Z_FALLBACK = 4.0


def auto_cutoff(scores: np.ndarray, background: np.ndarray | None = None, *, exhaustive: bool = True) -> int:
    """How many of ``scores`` (sorted, best first) stand out for their query.

    The method, in two steps:

    1. *A break in the ranking.*  Below the true matches, scores thin out smoothly;
       a real boundary shows as a gap much wider than the gaps after it.  Gaps
       near the top of a ranking are naturally wider (the top of a distribution's
       tail is sparse), so each gap ``g_i`` after rank ``i`` is scaled by ``i``
       (for an exponential tail the scaled gaps ``i*g_i`` are identically
       distributed: Rényi's representation of order statistics), and compared with
       the mean scaled gap of the :data:`AUTO_WINDOW` ranks below it.  A ratio of at
       least :data:`AUTO_MIN_SIGNIFICANCE` is a break.  Of all breaks, the widest
       (largest raw score gap) is the cut: it separates the strongest tier of
       matches from what follows.  Only gaps above the median of ``background``
       count: a break among scores worse than a typical image's is no match.
    2. *No break: outliers over the background.*  When the scores form no tiers
       (common with large models on real photos), keep those at least
       :data:`AUTO_Z_FALLBACK` robust standard deviations (1.4826 x MAD) above the
       median of ``background``, a sample of the scores of the whole searched set.

    If neither finds anything, nothing stands out and the answer is 0.

    Args:
        scores: the top scores of a query, best first.
        background: scores of a random sample of the searched images (for step 2).
        exhaustive: ``scores`` holds every searched image; otherwise breaks are
            only looked for where a full window of ranks follows.
    """
    s = np.asarray(scores, dtype=np.float64)
    n = len(s)
    if n == 0:
        return 0
    if n >= 2:
        gaps = s[:-1] - s[1:]  # gaps[i] separates rank i+1 from rank i+2
        scaled = gaps * np.arange(1, n)
        # Mean of the next AUTO_WINDOW scaled gaps, by prefix sums.
        csum = np.concatenate([[0.0], np.cumsum(scaled)])
        idx = np.arange(n - 1)
        hi = np.minimum(idx + 1 + AUTO_WINDOW, n - 1)
        count = hi - (idx + 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            below = (csum[hi] - csum[idx + 1]) / np.maximum(count, 1)
        # Identical scores below (exact duplicates) must not make any gap infinitely significant.
        floor = max(1e-6, float(np.median(scaled)) * 1e-3)
        ratio = scaled / np.maximum(below, floor)
        min_count = AUTO_WINDOW if not exhaustive else min(AUTO_WINDOW, 8)
        usable = count >= min_count
        if background is not None and len(background):
            # A break among scores below what a typical image gets is not "standing out":
            # only gaps whose lower side is above the background median count.
            usable &= s[1:] > float(np.median(background))
        breaks = np.flatnonzero(usable & (ratio >= AUTO_MIN_SIGNIFICANCE))
        if len(breaks):
            best = breaks[np.argmax(gaps[breaks])]
            return int(best) + 1
    if background is not None and len(background) >= 8:
        bg = np.asarray(background, dtype=np.float64)
        med = float(np.median(bg))
        sigma = 1.4826 * float(np.median(np.abs(bg - med)))
        if sigma > 0:
            return int(np.count_nonzero(s >= med + AUTO_Z_FALLBACK * sigma))
    return 0
