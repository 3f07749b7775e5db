"""Few-shot reranking in the spirit of Flamingo: "more like these, not like those".

The CLIP encoders stay frozen and nothing is trained on anyone's data.  The
shots a user marks (image embeddings labelled *like* or *unlike*) form an
interleaved sequence of (image, label) examples after the query.  They are
compressed into a **bounded summary**: at most ``max_latents`` latents per
label, each the attention-weighted mean of the shots it attends to (a
perceiver-style resampler without learned weights; with few shots every shot
is its own latent).  Every candidate then **cross-attends** to the summary, plus
an attention *sink* (a latent at the centre of the pool with value 0), and reads
out a residual in [-1, 1]: positive near liked examples, negative near unliked
ones, 0 when neither is closer than the average image.  The residual reaches the
score through a **tanh gate**::

    score(c) = clip(c) + tanh(alpha) * spread * residual(c)

``alpha`` starts at 0, so with no shots the scores *are* the CLIP scores, bit for
bit.  Two numbers are fitted per query, on the shots alone, by leave-one-out:
the gate ``alpha`` and the attention sharpness ``beta`` (low ``beta`` makes the
residual a smooth linear direction -- whitened Rocchio -- high ``beta`` a
nearest-example vote).  Each held-out shot is scored by a summary of the other
shots; the pair (alpha, beta) that ranks held-out likes highest and held-out
unlikes lowest among the candidates wins; ties go to the smaller gate.

Attention runs in a whitened metric: the candidates' own covariance (shrunk
towards the identity) rescales the embedding so that directions along which the
candidate pool varies a lot (nuisance attributes shared by likes and unlikes)
count less than rare, distinguishing ones.  That uses only the unlabelled pool.

Cost is bounded: the summary is O(shots x latents x dim) and each candidate
attends to at most ``2 * max_latents + 1`` latents, whatever the number of shots.
Only NumPy is needed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["FewShotFit", "FewShotReranker", "rocchio_scores"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FewShotFit:
    """What :meth:`FewShotReranker.fit` chose for one query, and why."""

    gate: float  # tanh(alpha): 0 means plain CLIP ranking
    beta: float  # attention sharpness in the whitened metric
    likes: int
    unlikes: int
    latents: int  # latents in the summary (both labels, sink excluded)
    loo_objective: float  # mean log-rank of held-out likes with the chosen pair (lower is better)
    clip_objective: float  # the same for plain CLIP ranking (gate 0)
    folds: int = 0  # held-out likes the choice rests on (0: the defaults were used)


def rocchio_scores(
    query: np.ndarray, candidates: np.ndarray, likes: np.ndarray, unlikes: np.ndarray,
) -> np.ndarray:
    """Query-vector averaging: candidates scored against ``query + mean(likes) - mean(unlikes)``."""
    v = np.asarray(query, dtype=np.float64).copy()
    if len(likes):
        v += np.asarray(likes, dtype=np.float64).mean(0)
    if len(unlikes):
        v -= np.asarray(unlikes, dtype=np.float64).mean(0)
    return np.asarray(candidates, dtype=np.float64) @ v


def _softmax_rows(logits: np.ndarray) -> np.ndarray:
    logits = logits - logits.max(axis=-1, keepdims=True)
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=-1, keepdims=True)
    return logits


class FewShotReranker:
    """Rerank CLIP candidates with a handful of liked and unliked examples.

    Args:
        max_latents: latents per label in the shot summary; more shots than this
            are compressed by a few rounds of latent-over-shot attention.
        shrinkage: how far the pool covariance is pulled towards a multiple of the
            identity before whitening (0: full whitening, 1: none).
        betas: attention sharpness values tried by leave-one-out.
        gates: ``tanh(alpha)`` values tried by leave-one-out (0 is always tried).
        spread: the residual, scaled to the pool's standard deviation of CLIP
            scores, is multiplied by ``spread * tanh(alpha)``.
    """

    def __init__(
        self,
        *,
        max_latents: int = 4,
        shrinkage: float = 0.5,
        betas: Sequence[float] = (0.25, 1.0, 4.0),
        gates: Sequence[float] = (0.125, 0.25, 0.5, 0.75),
        default_beta: float = 0.25,
        default_gate: float = 0.25,
        spread: float = 2.0,
        se_rule: float = 1.0,
        summary_rounds: int = 3,
    ) -> None:
        if max_latents < 1:
            raise ValueError("max_latents must be at least 1")
        if not 0.0 <= shrinkage <= 1.0:
            raise ValueError("shrinkage must be within [0, 1]")
        self.max_latents = max_latents
        self.shrinkage = shrinkage
        self.betas = tuple(sorted({float(b) for b in betas} | {float(default_beta)}))
        self.gates = tuple(sorted({0.0, float(default_gate)} | {float(g) for g in gates if 0.0 < g < 1.0}))
        self.default = (self.betas.index(float(default_beta)), self.gates.index(float(default_gate)))
        self.spread = spread
        self.se_rule = se_rule
        self.summary_rounds = summary_rounds

    # -- pieces -------------------------------------------------------------

    def _metric(self, pool: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Centre and whitening matrix of the candidate pool (shrunk covariance)."""
        mu = pool.mean(axis=0)
        x = pool - mu
        d = pool.shape[1]
        cov = x.T @ x / max(1, len(pool))
        lam = self.shrinkage
        iso = max(float(np.trace(cov)) / d, 1e-12)
        cov = (1 - lam) * cov + lam * iso * np.eye(d)
        evals, evecs = np.linalg.eigh(cov)
        evals = np.maximum(evals, iso * 1e-6)
        # Scaled so that a typical pool vector has squared norm about 1.
        w = (evecs / np.sqrt(evals * d)) @ evecs.T
        return mu, w

    def _summary(self, keys: np.ndarray) -> np.ndarray:
        """Assignment weights (latents x shots) of one label's shots to its latents.

        With at most ``max_latents`` shots every shot is its own latent.  Otherwise
        latents start at shots spread over the set (farthest-point order) and take a
        few rounds of attention over the shots, competing for them (softmax over
        latents, as in slot attention), each becoming the weighted mean of its share.
        """
        n = len(keys)
        if n <= self.max_latents:
            return np.eye(n)
        start = [0]
        dist = ((keys - keys[0]) ** 2).sum(1)
        while len(start) < self.max_latents:
            nxt = int(np.argmax(dist))
            start.append(nxt)
            dist = np.minimum(dist, ((keys - keys[nxt]) ** 2).sum(1))
        latents = keys[start]
        temp = 1.0 / max(float(np.median(((keys[:, None, :] - latents[None]) ** 2).sum(-1))), 1e-12)
        share = np.zeros((self.max_latents, n))
        for _ in range(self.summary_rounds):
            d2 = ((keys[:, None, :] - latents[None]) ** 2).sum(-1)  # shots x latents
            share = _softmax_rows(-temp * d2 * 4.0).T  # latents x shots
            mass = share.sum(1, keepdims=True)
            latents = (share @ keys) / np.maximum(mass, 1e-12)
        return share  # row m: how much of each shot latent m holds

    def _latents(self, keys: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mixing matrix (latents x shots, rows summing to 1) of the shots ``idx`` and latent masses."""
        share = self._summary(keys[idx])
        return share / np.maximum(share.sum(1, keepdims=True), 1e-12), share.sum(1)

    def _readout(
        self, dots: np.ndarray, groups: list[tuple[np.ndarray, np.ndarray, np.ndarray, float]], beta: float,
    ) -> np.ndarray:
        """Cross-attention of rows (candidates) to the summary latents and the sink.

        ``dots`` holds the rows' whitened dot products with every shot; a latent is
        a weighted mean of shots, so its dot product is the same mix of the shots'.
        Each group is (shot indices, mixing matrix, latent masses, value).  A
        latent's log-mass enters its logit, so a latent holding three shots weighs
        like three shots; the sink has dot 0, mass 1 and value 0.
        """
        logits = [np.zeros((dots.shape[0], 1))]
        values = [np.zeros(1)]
        for idx, mix, mass, value in groups:
            if len(idx) == 0:
                continue
            logits.append(beta * (dots[:, idx] @ mix.T) + np.log(mass))
            values.append(np.full(len(mass), value))
        att = _softmax_rows(np.concatenate(logits, axis=1))
        return att @ np.concatenate(values)

    def _groups(self, keys: np.ndarray, like_idx: np.ndarray, unlike_idx: np.ndarray) -> list:
        out = []
        for idx, value in ((like_idx, 1.0), (unlike_idx, -1.0)):
            if len(idx):
                mix, mass = self._latents(keys, idx)
                out.append((idx, mix, mass, value))
        return out

    # -- the public verb ----------------------------------------------------

    def fit_scores(
        self,
        query: np.ndarray | None,
        candidates: np.ndarray,
        likes: np.ndarray,
        unlikes: np.ndarray,
        *,
        base_scores: np.ndarray | None = None,
        exclude: np.ndarray | None = None,
    ) -> tuple[np.ndarray, FewShotFit]:
        """Fit the gate and sharpness on the shots and return the reranked scores.

        Args:
            query: the query embedding (d,); used for the CLIP scores when
                ``base_scores`` is not given.
            candidates: (n, d) embeddings of the candidate pool.
            likes, unlikes: (k, d) embeddings of the shots (either may be empty).
            base_scores: the candidates' CLIP scores when already known (from
                FAISS); with no shots they are returned unchanged.
            exclude: boolean mask of candidates that are the shots themselves;
                leave-one-out ranks a held-out shot among the other candidates only.

        Returns:
            (scores, fit): new scores for the candidates, in their order, and what
            was fitted.
        """
        cand = np.asarray(candidates, dtype=np.float64)
        if base_scores is None:
            if query is None:
                raise ValueError("give the query embedding or the base scores")
            base = cand @ np.asarray(query, dtype=np.float64)
        else:
            base = np.asarray(base_scores, dtype=np.float64)
        likes = np.asarray(likes, dtype=np.float64).reshape(-1, cand.shape[1])
        unlikes = np.asarray(unlikes, dtype=np.float64).reshape(-1, cand.shape[1])
        n_like, n_unlike = len(likes), len(unlikes)
        plain = FewShotFit(0.0, 0.0, n_like, n_unlike, 0, 0.0, 0.0, 0)
        if n_like + n_unlike == 0 or len(cand) < 2:
            return np.array(base_scores if base_scores is not None else base, copy=True), plain
        mu, w = self._metric(cand)
        ckeys = (cand - mu) @ w
        shots = np.vstack([likes, unlikes])
        skeys = (shots - mu) @ w
        dots = ckeys @ skeys.T  # candidates x shots
        sdots = skeys @ skeys.T  # shots x shots
        shot_base = shots @ np.asarray(query, dtype=np.float64) if query is not None else None
        keep = np.ones(len(cand), bool) if exclude is None else ~np.asarray(exclude, bool)
        spread = self.spread * float(base.std()) or 1.0
        like_idx, unlike_idx = np.arange(n_like), np.arange(n_like, n_like + n_unlike)
        gates = np.asarray(self.gates)

        # Leave-one-out: each liked shot is scored by a summary of the other shots
        # and ranked among the pool; the loss is its log-rank, for every (beta, gate).
        # (Held-out unlikes made a noisier objective on development data.)
        pool_base = base[keep]
        folds: list[np.ndarray] = []  # per held-out like: loss for every (beta, gate)
        if shot_base is not None and n_like + n_unlike >= 2:
            for j in range(n_like):
                groups = self._groups(skeys, like_idx[like_idx != j], unlike_idx[unlike_idx != j])
                if not groups:
                    continue
                loss = np.zeros((len(self.betas), len(gates)))
                for b, beta in enumerate(self.betas):
                    r_pool = self._readout(dots[keep], groups, beta)
                    r_j = float(self._readout(sdots[j : j + 1], groups, beta)[0])
                    scale = spread / (float(r_pool.std()) or 1.0)
                    s_pool = pool_base[None, :] + (gates * scale)[:, None] * r_pool[None, :]
                    s_j = shot_base[j] + gates * scale * r_j
                    loss[b] = np.log1p((s_pool > s_j[:, None]).sum(1))
                folds.append(loss)
        b_best, g_best = self.default
        loo = np.mean(folds, axis=0) if folds else np.zeros((len(self.betas), len(gates)))
        if len(folds) >= 2:
            # One-standard-error rule: leave the default only for a pair whose
            # leave-one-out loss beats it by more than a standard error of the
            # paired difference; few shots rarely give that much evidence.
            stack = np.stack(folds)
            diff = stack - stack[:, b_best, g_best][:, None, None]
            se = diff.std(axis=0, ddof=1) / np.sqrt(len(folds))
            gain = -(diff.mean(axis=0)) - self.se_rule * se
            if gain.max() > 0:
                b_best, g_best = (int(i) for i in np.unravel_index(int(np.argmax(gain)), gain.shape))
        gate, beta = float(gates[g_best]), self.betas[b_best]
        groups = self._groups(skeys, like_idx, unlike_idx)
        n_latents = sum(len(m) for _, _, m, _ in groups)
        fit = FewShotFit(gate, beta, n_like, n_unlike, n_latents, float(loo[b_best, g_best]), float(loo[b_best, 0]),
                         len(folds))
        if gate == 0.0:
            return np.array(base_scores if base_scores is not None else base, copy=True), fit
        r = self._readout(dots, groups, beta)
        scale = spread / (float(r[keep].std()) or 1.0)
        return base + gate * scale * r, fit
