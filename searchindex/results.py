"""What the public API returns, and the one JSON form of each.

Every value here is a frozen dataclass with :meth:`~JsonForm.to_dict`: a dict of
plain JSON types (str, int, float, bool, None, lists, dicts) that ``json.dumps``
writes as is.  The CLI's ``--json`` output is made only from these dicts, and so
is any HTTP API built on the library: the two cannot drift apart.

This module imports nothing else from the package (any layer may use it), nor
anything heavy: ``searchindex --help`` stays fast.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CaptionFailure",
    "Concept",
    "CaptionProgress",
    "CaptionSummary",
    "DuplicateGroup",
    "DuplicateImage",
    "FailureRecord",
    "IndexInfo",
    "IndexProgress",
    "IndexSummary",
    "JsonForm",
    "LabelReport",
    "OcrProgress",
    "OcrSummary",
    "SearchResult",
    "TagCount",
    "TextLine",
]


def _plain(value: Any) -> Any:
    if isinstance(value, JsonForm):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if hasattr(value, "item") and callable(value.item):  # a NumPy scalar that slipped in
        return value.item()
    return value


class JsonForm:
    """Mixin of the result dataclasses: :meth:`to_dict` is their JSON form."""

    def to_dict(self) -> dict[str, Any]:
        """Every field, as JSON-ready values (nested results as dicts, tuples as lists)."""
        assert dataclasses.is_dataclass(self)
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


@dataclass(frozen=True)
class SearchResult(JsonForm):
    """One hit: its rank (1-based), score, and catalog facts.

    ``score`` is what the results are ranked by: the CLIP cosine similarity in
    vector mode, the fused score in hybrid mode, BM25 in text mode, the ITM match
    probability after ``rerank="itm"``; ``vector_score`` and ``text_score`` keep
    the parts.
    """

    rank: int
    score: float
    path: str
    image_id: int
    width: int
    height: int
    format: str
    size: int
    sha256: str
    taken_at: str | None = None  # local wall-clock time, ISO 8601 (see searchindex.ingest.metadata)
    taken_offset: str | None = None  # "+02:00" when the camera recorded it
    date_source: str | None = None  # "exif", "mtime", or None when not read yet
    camera_make: str | None = None
    camera_model: str | None = None
    lens: str | None = None
    gps_lat: float | None = None
    gps_lon: float | None = None
    tags: tuple[str, ...] = ()  # zero-shot labels the image carries, strongest first
    caption: str | None = None  # a generated caption (searchindex caption), if any
    keywords: tuple[str, ...] = ()  # keywords and descriptions people wrote (XMP, IPTC, sidecars)
    vector_score: float | None = None  # CLIP cosine similarity (None in text mode)
    text_score: float | None = None  # BM25 of the query's words (None when words played no part in the rank)
    persons: tuple[str, ...] = ()  # named persons whose faces are in the image (searchindex faces)
    timestamp: float | None = None  # a video's best-matching second (None for photos)
    moments: tuple[float, ...] = ()  # a video's next best seconds, best first, >= 10 s apart
    duration: float | None = None  # a video's length in seconds
    ocr_text: tuple[str, ...] = ()  # lines read in the image that hold a query word (searchindex ocr)


@dataclass(frozen=True)
class IndexInfo(JsonForm):
    """What an index is made of and how big it is."""

    path: str
    model: str
    pretrained: str
    checkpoint_sha256: str | None
    dim: int
    images: int
    failures: int
    generation: int
    faiss_factory: str
    schema_version: int
    catalog_bytes: int
    vector_bytes: int
    index_type: str = "auto"  # what was asked for: "auto" (the size policy) or a factory string
    nprobe: int | None = None  # IVF lists probed per query, tuned to a recall target
    tuned_recall: float | None = None  # recall@10 of that setting against exact search, when tuned
    built_at: int = 0  # images the vector index held when it was last rebuilt
    faiss_memory_bytes: int = 0  # the FAISS index in memory (its serialized size)
    bytes_per_image: float = 0.0
    captions: dict[str, int] = dataclasses.field(default_factory=dict)  # captioning model -> images captioned
    faces: dict[str, int] = dataclasses.field(default_factory=dict)  # images searched, faces, persons, named
    videos: int = 0  # of ``images``, how many are videos
    video_frames: int = 0  # frames kept from them (each with its time and embedding)
    folders: tuple[str, ...] = ()  # the folders indexed (what `searchindex watch` watches by default)
    ocr: dict[str, int] = dataclasses.field(default_factory=dict)  # read, with_text, lines (searchindex ocr)


@dataclass(frozen=True)
class FailureRecord(JsonForm):
    """A file that could not be indexed, and why."""

    path: str
    size: int
    mtime_ns: int
    reason: str


@dataclass(frozen=True)
class IndexProgress(JsonForm):
    """Reported after each committed batch."""

    done: int  # files processed so far in this run
    total: int  # files this run has to process (everything but the unchanged)
    indexed: int
    failed: int


@dataclass(frozen=True)
class IndexSummary(JsonForm):
    """What one ``add_folder`` run did."""

    scanned: int  # image files found
    indexed: int  # files decoded and encoded (new + modified content)
    unchanged: int  # same path, size and mtime as last time (earlier failures included)
    failed: int  # files that could not be decoded in this run
    seconds: float
    failures: tuple[FailureRecord, ...] = ()
    new: int = 0  # paths not in the index before, encoded or duplicated (moves counted apart)
    modified: int = 0  # indexed paths whose content changed
    touched: int = 0  # indexed paths whose mtime/size changed but content did not
    moved: int = 0  # rows that followed their content to a new path
    duplicates: int = 0  # new paths whose content was already indexed elsewhere (not re-encoded)
    deleted: int = 0  # rows removed because their file is gone
    interrupted: bool = False  # stopped early on request; run again to resume


@dataclass(frozen=True)
class DuplicateImage(JsonForm):
    """One copy in a group of near-duplicates."""

    path: str
    image_id: int
    width: int
    height: int
    size: int
    mtime_ns: int
    taken_at: str | None  # date taken, local wall-clock ISO text (see searchindex.ingest.metadata)
    similarity: float  # cosine similarity to the group's best copy (1.0 for the best copy itself)


@dataclass(frozen=True)
class DuplicateGroup(JsonForm):
    """Near-identical images, best copy first: largest resolution, then oldest, then path."""

    images: tuple[DuplicateImage, ...]

    @property
    def best(self) -> DuplicateImage:
        return self.images[0]


@dataclass(frozen=True)
class LabelReport(JsonForm):
    """What tagging did for one label."""

    label: str
    tagged: int  # images carrying the label after this run
    scored: int  # images scored in this run
    threshold: float
    calibrated: bool  # the threshold came from a two-group split of the collection


@dataclass(frozen=True)
class TagCount(JsonForm):
    """A stored zero-shot label and how many images carry it."""

    label: str
    images: int


@dataclass(frozen=True)
class CaptionProgress(JsonForm):
    """Reported after each committed batch of captions."""

    done: int  # images processed so far in this run (captioned or failed)
    total: int  # images this run has to caption
    captioned: int
    failed: int


@dataclass(frozen=True)
class CaptionFailure(JsonForm):
    """An indexed image that could not be captioned (it is retried by the next run)."""

    path: str
    reason: str


@dataclass(frozen=True)
class CaptionSummary(JsonForm):
    """What one :meth:`searchindex.Index.caption` run did."""

    model: str  # as recorded with each caption
    prompt: str | None
    captioned: int  # images captioned and committed in this run
    failed: int  # images that could not be read or decoded (not recorded; retried next run)
    already: int  # images that already had a caption from this model
    seconds: float
    failures: tuple[CaptionFailure, ...] = ()
    interrupted: bool = False  # stopped early on request; run again to resume

    @property
    def images_per_s(self) -> float:
        return self.captioned / self.seconds if self.captioned and self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "images_per_s": self.images_per_s}


@dataclass(frozen=True)
class Concept(JsonForm):
    """A saved concept: a query text (or none) with example images that show / do not show it."""

    name: str
    query: str | None
    like: tuple[int, ...] = ()
    unlike: tuple[int, ...] = ()
    updated_at: float = 0.0


# -- text read in photos (searchindex ocr) --------------------------------------------


@dataclass(frozen=True)
class TextLine(JsonForm):
    """One line of text read in an image.

    ``box``: the line's four corners (x, y) as fractions of the image's width and height (the
    image as displayed, EXIF orientation applied): x0, y0, x1, y1, x2, y2, x3, y3.
    ``angle``: how far the line is turned from upright (0, 90, 180 or 270 degrees).
    """

    text: str
    confidence: float  # 0..1, the reading engine's own estimate
    box: tuple[float, ...]
    angle: int
    engine: str  # "rapidocr" or "tesseract"


@dataclass(frozen=True)
class OcrProgress(JsonForm):
    """Reported after each committed batch of images read."""

    done: int  # images processed so far in this run (read or failed)
    total: int  # images this run has to read
    with_text: int  # of those read, images where some text was found
    failed: int


@dataclass(frozen=True)
class OcrSummary(JsonForm):
    """What one :meth:`searchindex.Index.ocr` run did."""

    reader: str  # engines and languages, as recorded with each image
    read: int  # images read and committed in this run
    with_text: int  # of those, images with at least one line
    lines: int  # lines found in this run
    failed: int  # images that could not be read or decoded (retried next run)
    already: int  # images read by an earlier run
    seconds: float
    failures: tuple[CaptionFailure, ...] = ()
    interrupted: bool = False  # stopped early on request; run again to resume

    @property
    def images_per_s(self) -> float:
        return self.read / self.seconds if self.read and self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "images_per_s": self.images_per_s}
