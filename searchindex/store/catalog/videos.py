"""Reads of the ``videos`` and ``video_frames`` tables (their writes are in :mod:`.batch`).

A video is one ``images`` row (so every filter and every per-image feature sees it);
its kept frames, each with a time and an embedding, hang off that row by id.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .reader import CatalogReader
from .records import VideoFrames

__all__ = ["FrameMatrix", "VideoFacts", "VideoReader"]


@dataclass(frozen=True)
class VideoFacts:
    """What the catalog knows of one video besides its image row."""

    image_id: int
    duration: float
    codec: str
    rotation: int
    frames: int


@dataclass(frozen=True)
class FrameMatrix:
    """Every kept frame of an index: video ids, times and embeddings, row by row, grouped by video."""

    image_ids: np.ndarray  # int64
    times: np.ndarray  # float64
    vectors: np.ndarray  # float32 (n, dim)
    generation: int


def _missing_table(exc: sqlite3.OperationalError) -> bool:
    # A catalog opened read-only before its upgrade to schema 9 has no video tables: no videos.
    return "no such table" in str(exc)


class VideoReader:
    """Video reads on one catalog (through its reader's per-thread connections)."""

    def __init__(self, reader: CatalogReader) -> None:
        self._read = reader

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            return self._read._rows(sql, params)
        except sqlite3.OperationalError as exc:
            if _missing_table(exc):
                return []
            raise

    def counts(self) -> tuple[int, int]:
        """(videos, kept frames) in the index."""
        rows = self._rows("SELECT COUNT(*), COALESCE(SUM(frames), 0) FROM videos")
        return (int(rows[0][0]), int(rows[0][1])) if rows else (0, 0)

    def facts(self, ids: Iterable[int]) -> dict[int, VideoFacts]:
        """image id -> facts of those ``ids`` that are videos."""
        wanted = [int(i) for i in ids]
        out: dict[int, VideoFacts] = {}
        for start in range(0, len(wanted), 500):
            chunk = wanted[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for row in self._rows(f"SELECT image_id, duration, codec, rotation, frames FROM videos "
                                  f"WHERE image_id IN ({marks})", chunk):
                image_id, duration, codec, rotation, frames = row
                out[int(image_id)] = VideoFacts(int(image_id), float(duration), str(codec),
                                                int(rotation), int(frames))
        return out

    def frames(self, image_id: int, dim: int) -> VideoFrames | None:
        """The kept frames of one video (``None``: not a video)."""
        facts = self.facts([image_id]).get(image_id)
        if facts is None:
            return None
        rows = self._rows("SELECT time, embedding FROM video_frames WHERE image_id = ? ORDER BY time, id",
                          (int(image_id),))
        times = np.array([float(r[0]) for r in rows], dtype=np.float64)
        vectors = (np.stack([np.frombuffer(r[1], dtype=np.float32).reshape(dim) for r in rows]) if rows
                   else np.zeros((0, dim), np.float32))
        return VideoFrames(facts.duration, facts.codec, facts.rotation, times, vectors)

    def matrix(self, dim: int) -> FrameMatrix:
        """Every kept frame of the index, with the catalog generation it was read at."""
        generation = self._read.generation()
        # Frames whose video row is gone (only after damage: they are written and removed together) are left out.
        rows = self._rows("SELECT image_id, time, embedding FROM video_frames WHERE image_id IN "
                          "(SELECT id FROM images) ORDER BY image_id, time, id")
        rows = [r for r in rows if isinstance(r[2], bytes) and len(r[2]) == 4 * dim]  # damaged ones: see check
        ids = np.array([int(r[0]) for r in rows], dtype=np.int64)
        times = np.array([float(r[1]) for r in rows], dtype=np.float64)
        vectors = (np.frombuffer(b"".join(r[2] for r in rows), dtype=np.float32).reshape(-1, dim)
                   if rows else np.zeros((0, dim), np.float32))
        return FrameMatrix(ids, times, vectors, generation)
