"""The catalog's tables (SQLAlchemy ORM) and the engine every repository shares.

The schema is versioned: :mod:`searchindex.store.catalog.migrations` upgrades older
files step by step, and creates the FTS5 table the ORM cannot declare.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import DDL, Float, Index, Integer, LargeBinary, String, create_engine, event, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.types import TypeDecorator

from .migrations import FTS_TABLE_SQL
from .ocrindex import OCR_FTS_SQL
from .sqlite import apply_pragmas, catalog_uri, chunks, damaged, decode_path, encode_path, is_damage


class FsPath(TypeDecorator[str]):
    """A file path as text, losslessly, even when the name is not valid UTF-8 (see
    :func:`~searchindex.store.catalog.sqlite.encode_path`)."""

    impl = String
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Any) -> str | None:
        return None if value is None else encode_path(value)

    def process_result_value(self, value: str | None, dialect: Any) -> str | None:
        return None if value is None else decode_path(value)


class Base(DeclarativeBase):
    pass


class MetaRow(Base):
    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String, primary_key=True)
    value: Mapped[str] = mapped_column(String)


class ImageRow(Base):
    __tablename__ = "images"
    # AUTOINCREMENT: an id is never reused, so a vector can never be confused with
    # the vector of a deleted image that once had the same id.
    __table_args__ = (
        Index("ix_images_camera", "camera_make", "camera_model"),
        Index("ix_images_gps", "gps_lat", "gps_lon"),
        {"sqlite_autoincrement": True},
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(FsPath, unique=True)
    size: Mapped[int] = mapped_column(Integer)
    mtime_ns: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String, index=True)
    width: Mapped[int] = mapped_column(Integer, index=True)
    height: Mapped[int] = mapped_column(Integer, index=True)
    format: Mapped[str] = mapped_column(String)
    indexed_at: Mapped[float] = mapped_column(Float)
    generation: Mapped[int] = mapped_column(Integer, index=True)
    embedding: Mapped[bytes] = mapped_column(LargeBinary)
    # Photo metadata (schema 2); NULL date_source = not read yet (rows from schema 1).
    taken_at: Mapped[str | None] = mapped_column(String, index=True)
    taken_offset: Mapped[str | None] = mapped_column(String)
    date_source: Mapped[str | None] = mapped_column(String)
    camera_make: Mapped[str | None] = mapped_column(String)
    camera_model: Mapped[str | None] = mapped_column(String)
    lens: Mapped[str | None] = mapped_column(String)
    gps_lat: Mapped[float | None] = mapped_column(Float)
    gps_lon: Mapped[float | None] = mapped_column(Float)
    orientation: Mapped[int | None] = mapped_column(Integer)


class SchemaHistoryRow(Base):
    """Migrations applied to this catalog (empty for a catalog created at the latest schema)."""

    __tablename__ = "schema_history"
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String)
    applied_at: Mapped[float] = mapped_column(Float)


class TagLabelRow(Base):
    """A zero-shot label: its text classifier, calibrated threshold, and how far tagging got (schema 3)."""

    __tablename__ = "tag_labels"
    name: Mapped[str] = mapped_column(String, primary_key=True)
    templates: Mapped[str] = mapped_column(String)  # JSON list of prompt templates
    classifier: Mapped[bytes] = mapped_column(LargeBinary)  # float32, normalised mean of template embeddings
    null_classifier: Mapped[bytes] = mapped_column(LargeBinary)  # float32, the generic-caption reference
    threshold: Mapped[float] = mapped_column(Float)  # on score - null score
    calibrated_images: Mapped[int] = mapped_column(Integer)  # images the threshold was calibrated on
    scored_generation: Mapped[int] = mapped_column(Integer)  # every image up to this generation is scored
    created_at: Mapped[float] = mapped_column(Float)


class ImageTagRow(Base):
    """A label an image passed, with its cosine score and its margin over the threshold (schema 3);
    or a label a person put on it (``by_user``, schema 12: score and margin 1, above any zero-shot one)."""

    __tablename__ = "image_tags"
    image_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    label: Mapped[str] = mapped_column(String, primary_key=True, index=True)
    score: Mapped[float] = mapped_column(Float)
    margin: Mapped[float] = mapped_column(Float)
    by_user: Mapped[int] = mapped_column(Integer, server_default="0")  # 1: set by hand, never replaced by tagging


class CaptionRow(Base):
    """A generated caption: one per image and captioning model (schema 5)."""

    __tablename__ = "captions"
    image_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model: Mapped[str] = mapped_column(String, primary_key=True)  # the model id or path as given
    prompt: Mapped[str] = mapped_column(String, server_default="")  # conditional captioning prefix
    text: Mapped[str] = mapped_column(String)
    created_at: Mapped[float] = mapped_column(Float)


class ImageTextRow(Base):
    """Text people wrote about an image: embedded XMP/IPTC or a sidecar file (schema 5)."""

    __tablename__ = "image_texts"
    image_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(String, primary_key=True)  # xmp:subject, iptc:keywords, sidecar:txt, ...
    text: Mapped[str] = mapped_column(String)


class TextStateRow(Base):
    """That an image's texts were read, and the signature of its sidecars then (schema 6).

    No row: never read (an image indexed before schema 6, or a crash between an
    image's commit and its texts'); a different signature: a sidecar was added,
    edited or removed.  Either way the next ``index`` run reads the texts again.
    """

    __tablename__ = "text_states"
    image_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sidecars: Mapped[str] = mapped_column(String)  # see searchindex.ingest.keywords.sidecar_signature


# The full-text index over file names, image texts and captions lives in an FTS5
# virtual table, which SQLAlchemy's metadata cannot declare: it is created right
# after the ORM tables, with the same statement the migration uses.
event.listen(Base.metadata, "after_create", DDL(FTS_TABLE_SQL))  # type: ignore[no-untyped-call]


class ConceptRow(Base):
    """A saved concept: a query text and the example images that teach it (schema 8)."""

    __tablename__ = "concepts"
    name: Mapped[str] = mapped_column(String, primary_key=True)
    query: Mapped[str | None] = mapped_column(String)
    like_ids: Mapped[str] = mapped_column(String)  # JSON list of image ids
    unlike_ids: Mapped[str] = mapped_column(String)
    updated_at: Mapped[float] = mapped_column(Float)


class RemovalRow(Base):
    """Image ids whose vectors must leave the vector index (kept for catch-up)."""

    __tablename__ = "removals"
    image_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    generation: Mapped[int] = mapped_column(Integer, index=True)


class FailureRow(Base):
    __tablename__ = "failures"
    path: Mapped[str] = mapped_column(FsPath, primary_key=True)
    size: Mapped[int] = mapped_column(Integer)
    mtime_ns: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(String)
    failed_at: Mapped[float] = mapped_column(Float)


def _raise_damage(path: Path) -> Callable[[Any], None]:
    def handle_error(context: Any) -> None:
        if is_damage(context.original_exception):
            raise damaged(path, context.original_exception) from context.original_exception
    return handle_error


def engine_for(path: Path, read_only: bool = False) -> Engine:
    """A SQLAlchemy engine on the catalog file at ``path`` (WAL, busy timeout)."""
    url = f"sqlite:///{catalog_uri(path, read_only)}&uri=true" if read_only else f"sqlite:///{path}"
    engine = create_engine(url, future=True)
    event.listen(engine, "connect", lambda conn, _record: apply_pragmas(conn))
    # Any statement that meets a damaged file raises IndexCorruptError naming it, not a traceback.
    event.listen(engine, "handle_error", _raise_damage(path))
    return engine


def executor(s: Session) -> Callable[[str, dict[str, Any]], Any]:
    """Run raw SQL with named parameters inside the session's transaction."""
    return lambda sql, params: s.execute(text(sql), params)


def alive_ids(s: Session, ids: Sequence[int]) -> set[int]:
    """Which of ``ids`` are still image rows (inside the session's transaction)."""
    alive: set[int] = set()
    for chunk in chunks(ids):
        alive.update(s.scalars(select(ImageRow.id).where(ImageRow.id.in_(list(chunk)))))
    return alive


class PersonRow(Base):
    """A person: a group of faces, perhaps named (schema 9: faces).  ``confirmed``: a user named or
    confirmed it, so grouping never merges it with another person."""

    __tablename__ = "persons"
    __table_args__ = ({"sqlite_autoincrement": True},)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str | None] = mapped_column(String, index=True)
    hidden: Mapped[int] = mapped_column(Integer, server_default="0")
    confirmed: Mapped[int] = mapped_column(Integer, server_default="0")
    created_at: Mapped[float] = mapped_column(Float)


class FaceRow(Base):
    """A face found in an image: its box in the oriented image's pixels, detector score, landmarks,
    128-d embedding and person (schema 9)."""

    __tablename__ = "faces"
    __table_args__ = ({"sqlite_autoincrement": True},)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(Integer, index=True)
    left: Mapped[int] = mapped_column(Integer)
    top: Mapped[int] = mapped_column(Integer)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    score: Mapped[float] = mapped_column(Float)
    quality: Mapped[float] = mapped_column(Float)
    landmarks: Mapped[str] = mapped_column(String)  # JSON [[x, y], ...]
    embedding: Mapped[bytes] = mapped_column(LargeBinary)  # float32 x 128
    person_id: Mapped[int | None] = mapped_column(Integer, index=True)
    flags: Mapped[int] = mapped_column(Integer, server_default="0")  # see searchindex.store.catalog.faces


class FaceRejectionRow(Base):
    """"Not this person": a face that grouping must never put in a person (schema 9)."""

    __tablename__ = "face_rejections"
    face_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    person_id: Mapped[int] = mapped_column(Integer, primary_key=True)


class FaceStateRow(Base):
    """That an image was searched for faces: with which detector, the content it had then, how many
    faces were found, and why it could not be read if it could not (schema 9)."""

    __tablename__ = "face_states"
    image_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String)
    detector: Mapped[str] = mapped_column(String)
    faces: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String)
    processed_at: Mapped[float] = mapped_column(Float)
class VideoRow(Base):
    """A video's facts; the video itself is an ``images`` row with the mean of its frames' embeddings (schema 10)."""

    __tablename__ = "videos"
    image_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    duration: Mapped[float] = mapped_column(Float)  # seconds
    codec: Mapped[str] = mapped_column(String)
    rotation: Mapped[int] = mapped_column(Integer)  # degrees counter-clockwise applied when decoding
    frames: Mapped[int] = mapped_column(Integer)  # frames kept


class VideoFrameRow(Base):
    """A kept frame of a video: its time in seconds and its embedding (schema 10)."""

    __tablename__ = "video_frames"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(Integer, index=True)
    time: Mapped[float] = mapped_column(Float)
    embedding: Mapped[bytes] = mapped_column(LargeBinary)
# -- text read in photos (OCR) --------------------------------------------------------


class OcrLineRow(Base):
    """One line of text read in an image (see :mod:`searchindex.store.catalog.ocrindex`)."""

    __tablename__ = "ocr_lines"
    image_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    line: Mapped[int] = mapped_column(Integer, primary_key=True)  # 0, 1, ... top to bottom
    text: Mapped[str] = mapped_column(String)
    confidence: Mapped[float] = mapped_column(Float)
    box: Mapped[str] = mapped_column(String)  # JSON: 8 numbers, 4 corners as fractions of width and height
    angle: Mapped[int] = mapped_column(Integer)  # 0, 90, 180, 270: how far the line is turned
    engine: Mapped[str] = mapped_column(String)


class OcrStateRow(Base):
    """That an image's text was read (with or without lines found), and by which reader."""

    __tablename__ = "ocr_states"
    image_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    reader: Mapped[str] = mapped_column(String)
    lines: Mapped[int] = mapped_column(Integer)
    read_at: Mapped[float] = mapped_column(Float)


event.listen(Base.metadata, "after_create", DDL(OCR_FTS_SQL))  # type: ignore[no-untyped-call]
