"""Videos in an indexing run: read (hash, sample frames), then encode the frames and keep the distinct ones.

A video becomes one image row (its embedding the normalised mean of its kept
frames, so duplicate detection, tags and the vector index see it like a photo)
plus its kept frames with their times (see :mod:`searchindex.store.catalog.videos`).
It is planned, moved, touched and deleted exactly like a photo: the plan compares
path, size and mtime, the commit compares content hashes, so a changed video is
read again and a moved one is not.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence, Set
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..errors import ImageDecodeError, MissingExtraError
from ..fileio import NotRegularFileError, open_regular
from ..models.encoders import Encoder
from ..models.images import IMAGE_EXTENSIONS
from ..models.pixels import PixelSpec, to_pixels
from ..models.video import MISSING_EXTRA, VIDEO_EXTENSIONS, Sampling, available, decode_video, keep_distinct
from ..results import FailureRecord
from ..store.catalog.records import VideoFrames
from .metadata import read_metadata
from .scan import FileEntry

__all__ = ["VideoPixels", "encode_video", "is_video", "read_video", "scan_extensions"]

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


def is_video(path: str) -> bool:
    """Whether ``path`` is named like a video."""
    return os.path.splitext(path)[1].lower() in VIDEO_EXTENSIONS


@dataclass
class VideoPixels:
    """A video's sampled frames as model input, in time order, with the facts of the stream."""

    times: list[float]
    pixels: list[Any]
    duration: float
    codec: str
    rotation: int


def _hash(path: str) -> str:
    """SHA-256 of a file read in chunks (a video may be far larger than memory should hold)."""
    digest = hashlib.sha256()
    with open_regular(path) as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def read_video(entry: FileEntry, known: Set[str], prepare: PixelSpec | Encoder,
               sampling: Sampling | None = None) -> tuple[Any, Any]:
    """Hash one video and, if its content is new, sample its frames as model input.

    Returns ``(produced fields, VideoPixels | None)`` for :func:`searchindex.ingest.produce.read_file`:
    a dict of :class:`~searchindex.ingest.produce.Produced` fields, or a
    :class:`FailureRecord` (and ``None``).
    """
    def fail(reason: str) -> tuple[FailureRecord, None]:
        return FailureRecord(entry.path, entry.size, entry.mtime_ns, reason), None

    if not available():
        return fail(MISSING_EXTRA)
    try:
        sha = _hash(entry.path)
    except NotRegularFileError as exc:
        return fail(exc.strerror or str(exc))
    except FileNotFoundError:
        return fail("file not found (deleted since the scan)")
    except OSError as exc:
        return fail(f"unreadable: {exc.strerror or exc}")
    fields: dict[str, Any] = dict(sha256=sha, meta=read_metadata(b"", entry.mtime_ns), texts=[], sidecars="",
                                  format="video")
    if sha in known:
        return fields, None
    sampling = sampling or Sampling()
    side = prepare.min_side if isinstance(prepare, PixelSpec) else prepare.image_size
    try:
        video = decode_video(entry.path, replace(sampling, side=max(side, 16)))
    except ImageDecodeError as exc:
        return fail(exc.reason)
    if isinstance(prepare, PixelSpec):
        pixels = [to_pixels(f.image, prepare) for f in video.frames]
    else:
        pixels = [prepare.preprocess(f.image) for f in video.frames]
    log.debug("%s: %d frames sampled (%d keyframes, %d decoded) in %.2f s", entry.path, len(video.frames),
              video.keyframes, video.decoded, video.seconds)
    fields.update(width=video.width, height=video.height)
    return fields, VideoPixels([f.time for f in video.frames], pixels, video.duration, video.codec, video.rotation)


def encode_video(encoder: Encoder, video: VideoPixels, similarity: float,
                 batch: int = 64) -> tuple[np.ndarray, VideoFrames]:
    """Encode a video's sampled frames, keep the distinct ones; returns (the video's vector, its frames)."""
    parts = []
    for start in range(0, len(video.pixels), batch):
        chunk: Sequence[Any] = video.pixels[start:start + batch]
        parts.append(encoder.encode_pixels(chunk) if encoder.pixel_spec is not None else encoder.encode_batch(chunk))
    vectors = np.concatenate(parts).astype(np.float32)
    keep = keep_distinct(vectors, similarity)
    kept = vectors[keep]
    mean = kept.astype(np.float64).mean(axis=0)
    norm = float(np.linalg.norm(mean))
    # Frames pointing in opposite directions could cancel out: the first frame stands in then.
    gist = (mean / norm).astype(np.float32) if norm > 1e-3 else kept[0]
    frames = VideoFrames(video.duration, video.codec, video.rotation,
                         np.array([video.times[i] for i in keep], dtype=np.float64), kept)
    return gist, frames


def scan_extensions(videos: bool | None) -> tuple[frozenset[str], frozenset[str]]:
    """(extensions to scan, extensions whose indexed files are kept unscanned) for a run.

    ``videos``: ``None`` takes videos when the ``video`` extra is installed.

    Raises:
        MissingExtraError: ``videos=True`` without the extra.
    """
    if videos is None:
        videos = available()
    elif videos and not available():
        raise MissingExtraError("indexing videos needs PyAV: pip install 'searchindex[video]'", extra="video")
    if videos:
        return IMAGE_EXTENSIONS | VIDEO_EXTENSIONS, frozenset()
    return IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
