"""Moments: the frames of videos in a ranking, grouped so that a video is one result.

A video's score is its best frame's cosine with the query; its ``timestamp`` is
that frame's time, and ``moments`` are up to :data:`MAX_MOMENTS` more frames, best
first, each at least :data:`MOMENT_GAP` seconds from the moments chosen before it
(a 5-second shot is one moment, not five) and within :data:`MOMENT_MARGIN` of the best.
Filters apply to the video's row, so its frames follow its path, date and tags.

The frames of an index are few next to its photos (a minute of video keeps tens),
so they are scored exactly, from a matrix read once per catalog generation.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from ..results import SearchResult
from ..store.catalog.reader import CatalogReader
from ..store.catalog.videos import FrameMatrix, VideoReader

__all__ = ["MAX_MOMENTS", "MOMENT_GAP", "MOMENT_MARGIN", "FrameRanking", "VideoHit", "attach_moments", "merge_videos",
           "rank_videos"]

#: Moments besides the best one that a video result carries.
MAX_MOMENTS = 3
#: Seconds between two moments of one video.
MOMENT_GAP = 10.0
#: A moment scores at most this much (cosine) below the video's best frame: the others are no match.
MOMENT_MARGIN = 0.1


@dataclass(frozen=True)
class VideoHit:
    """A video's best frame for a query, and its other moments as (time, score), best first."""

    image_id: int
    score: float
    timestamp: float
    moments: tuple[tuple[float, float], ...]


class FrameRanking:
    """Scores the kept frames of one index (the matrix is re-read when the catalog's generation moves)."""

    def __init__(self, reader: CatalogReader, dim: int) -> None:
        self._reader = reader
        self._dim = dim
        self._matrix: FrameMatrix | None = None
        self._lock = threading.Lock()

    def matrix(self) -> FrameMatrix:
        """The frames as of the catalog's current generation."""
        generation = self._reader.generation()
        with self._lock:
            if self._matrix is None or self._matrix.generation != generation:
                self._matrix = VideoReader(self._reader).matrix(self._dim)
            return self._matrix

    def hits(self, vector: np.ndarray, candidates: np.ndarray | None = None) -> dict[int, VideoHit]:
        """video id -> its best moments for the unit ``vector``; only videos among ``candidates`` when given."""
        return rank_videos(self.matrix(), vector, candidates)


def rank_videos(m: FrameMatrix, vector: np.ndarray, candidates: np.ndarray | None = None) -> dict[int, VideoHit]:
    """video id -> :class:`VideoHit` for every video with frames in ``m`` (among ``candidates``)."""
    if not len(m.image_ids):
        return {}
    ids, times, vectors = m.image_ids, m.times, m.vectors
    if candidates is not None:
        keep = np.isin(ids, candidates)
        ids, times, vectors = ids[keep], times[keep], vectors[keep]
        if not len(ids):
            return {}
    scores = vectors @ np.asarray(vector, dtype=np.float32)
    # Rows are grouped by video: one segment per video.
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    ends = np.r_[starts[1:], len(ids)]
    out: dict[int, VideoHit] = {}
    for a, b in zip(starts, ends, strict=True):
        order = a + np.argsort(-scores[a:b], kind="stable")
        chosen: list[int] = []
        for j in order:
            if chosen and scores[j] < scores[chosen[0]] - MOMENT_MARGIN:
                break
            if all(abs(times[j] - times[c]) >= MOMENT_GAP for c in chosen):
                chosen.append(int(j))
                if len(chosen) > MAX_MOMENTS:
                    break
        best = chosen[0]
        out[int(ids[a])] = VideoHit(int(ids[a]), float(scores[best]), float(times[best]),
                                    tuple((float(times[c]), float(scores[c])) for c in chosen[1:]))
    return out


def merge_videos(scores: np.ndarray, ids: np.ndarray, hits: dict[int, VideoHit], k: int | None,
                 min_score: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ranking (``scores``, ``ids``, best first) with each video scored by its best frame.

    A video's own row (the mean of its frames) leaves the ranking; every video in
    ``hits`` (at least ``min_score``) enters it at its best frame's score; the
    result is cut to ``k``.
    """
    if not hits:
        return scores, ids
    videos = np.fromiter(hits, dtype=np.int64, count=len(hits))
    video_scores = np.array([hits[int(v)].score for v in videos], dtype=np.float32)
    if min_score is not None:
        keep = video_scores >= min_score
        videos, video_scores = videos[keep], video_scores[keep]
    others = ~np.isin(ids, np.fromiter(hits, dtype=np.int64, count=len(hits)))
    all_ids = np.concatenate([np.asarray(ids, dtype=np.int64)[others], videos])
    all_scores = np.concatenate([np.asarray(scores, dtype=np.float32)[others], video_scores])
    order = np.argsort(-all_scores, kind="stable")
    if k is not None:
        order = order[:k]
    return all_scores[order], all_ids[order]


def attach_moments(results: Sequence[SearchResult], hits: dict[int, VideoHit],
                   reader: CatalogReader) -> list[SearchResult]:
    """``results`` with each video's ``timestamp``, ``moments`` (times, best first) and ``duration``."""
    videos = [r.image_id for r in results if r.format == "video"]
    if not videos:
        return list(results)
    facts = VideoReader(reader).facts(videos)
    out = []
    for r in results:
        f = facts.get(r.image_id)
        if f is None:
            out.append(r)
            continue
        hit = hits.get(r.image_id)
        out.append(replace(r, duration=f.duration, timestamp=None if hit is None else round(hit.timestamp, 3),
                           moments=() if hit is None else tuple(round(t, 3) for t, _ in hit.moments)))
    return out
