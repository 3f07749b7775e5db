"""The catalog's record types: what goes in and what comes out, as plain values.

A failure comes out as :class:`~searchindex.results.FailureRecord`, a public result type of
:mod:`searchindex.results`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from ...results import JsonForm, TextLine

__all__ = ["RECORD_COLUMNS", "ImageDetails", "ImageRecord", "ImageState", "NewImage", "PhotoMetadata", "TagLabel",
           "VideoFrames", "state_key"]


def state_key(generation: int) -> str:
    """The ``meta`` key of the random token a committed generation got (see :func:`commit_batch`)."""
    return f"state:{generation}"


@dataclass(frozen=True)
class PhotoMetadata:
    """What the catalog stores about a photo besides its pixels."""

    taken_at: str  # local wall-clock time, ISO 8601 without offset: 2024-07-14T18:03:22
    date_source: str  # "exif" or "mtime"
    taken_offset: str | None = None  # "+02:00" when known
    camera_make: str | None = None
    camera_model: str | None = None
    lens: str | None = None
    gps_lat: float | None = None
    gps_lon: float | None = None
    orientation: int | None = None

    def columns(self) -> dict[str, Any]:
        """The catalog column values."""
        return {
            "taken_at": self.taken_at, "taken_offset": self.taken_offset, "date_source": self.date_source,
            "camera_make": self.camera_make, "camera_model": self.camera_model, "lens": self.lens,
            "gps_lat": self.gps_lat, "gps_lon": self.gps_lon, "orientation": self.orientation,
        }


@dataclass(frozen=True)
class NewImage:
    """An image decoded and encoded, ready to be written."""

    path: str
    size: int
    mtime_ns: int
    sha256: str
    width: int
    height: int
    format: str
    embedding: np.ndarray
    meta: PhotoMetadata | None = None
    video: VideoFrames | None = None  # the kept frames when the file is a video


@dataclass(frozen=True)
class VideoFrames:
    """A video's kept frames (times in seconds, unit embeddings in rows) and its facts."""

    duration: float
    codec: str
    rotation: int
    times: np.ndarray  # float64, ascending
    vectors: np.ndarray  # float32, one row per time


@dataclass(frozen=True)
class TagLabel:
    """A stored zero-shot label."""

    name: str
    templates: tuple[str, ...]
    classifier: np.ndarray
    null_classifier: np.ndarray
    threshold: float
    calibrated_images: int
    scored_generation: int


class ImageState(NamedTuple):
    """What a run compares a file found on disk with: its row's id, the stat it was indexed with,
    and its content's hash."""

    id: int
    size: int
    mtime_ns: int
    sha256: str


@dataclass(frozen=True)
class ImageRecord:
    """An image row as the catalog stores it (without its embedding)."""

    id: int
    path: str
    size: int
    mtime_ns: int
    sha256: str
    width: int
    height: int
    format: str
    indexed_at: float
    taken_at: str | None = None
    taken_offset: str | None = None
    date_source: str | None = None
    camera_make: str | None = None
    camera_model: str | None = None
    lens: str | None = None
    gps_lat: float | None = None
    gps_lon: float | None = None
    orientation: int | None = None


@dataclass(frozen=True)
class ImageDetails(ImageRecord, JsonForm):
    """Everything the index knows about one image (see :meth:`searchindex.Index.image`): its row and words."""

    tags: tuple[str, ...] = ()  # zero-shot labels, strongest first
    caption: str | None = None  # the first generated caption
    captions: dict[str, str] = field(default_factory=dict)  # captioning model -> caption
    keywords: tuple[str, ...] = ()  # keywords and descriptions people wrote
    text_lines: tuple[TextLine, ...] = ()  # lines of text read in the photo (searchindex ocr), top to bottom

    def to_dict(self) -> dict[str, Any]:
        """The HTTP API's ``/api/images/{id}``; the id is ``image_id``, as in search results."""
        data = super().to_dict()
        return {"image_id": data.pop("id"), **data}


RECORD_COLUMNS = (
    "id", "path", "size", "mtime_ns", "sha256", "width", "height", "format", "indexed_at",
    "taken_at", "taken_offset", "date_source", "camera_make", "camera_model", "lens", "gps_lat", "gps_lon",
    "orientation",
)
