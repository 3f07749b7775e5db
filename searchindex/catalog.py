"""The catalog: SQLite through SQLAlchemy, the index's source of truth.

One row per image with its metadata *and* its embedding, written in the same
transaction; failures with their reasons; and the index's metadata (model,
vector size, schema version, generation).  Every committed batch bumps the
generation, and each changed row carries the generation that wrote it, so the
FAISS file (a cache) can be caught up from exactly what changed since it was saved.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import re
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote_to_bytes

import numpy as np
from sqlalchemy import (
    DDL,
    Float,
    Index,
    Integer,
    LargeBinary,
    String,
    and_,
    create_engine,
    delete,
    event,
    false,
    func,
    not_,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.types import TypeDecorator

from .encoders import ModelSpec
from .errors import IndexSchemaError
from .metadata import PhotoMetadata
from .migrations import FTS_TABLE_SQL, SCHEMA_VERSION, pending, refresh_text_index, upgrade
from .query import EARTH_RADIUS_KM, Filters, glob_to_sqlite, haversine_km

__all__ = ["CATALOG_FILE", "SCHEMA_VERSION", "Catalog", "FailureRecord", "ImageRecord", "NewImage", "TagLabel"]

log = logging.getLogger(__name__)

CATALOG_FILE = "catalog.sqlite"


class FsPath(TypeDecorator[str]):
    """A file path as text, losslessly, even when the name is not valid UTF-8.

    Python represents undecodable bytes in file names as lone surrogates, which
    SQLite's UTF-8 text cannot hold.  Such paths are stored percent-encoded
    behind a prefix that no absolute path starts with, and decoded on the way out.
    """

    impl = String
    cache_ok = True
    _PREFIX = "?bytes:"

    def process_bind_param(self, value: str | None, dialect: Any) -> str | None:
        if value is None:
            return None
        try:
            value.encode("utf-8")
            return value
        except UnicodeEncodeError:
            return self._PREFIX + quote(os.fsencode(value), safe="/")

    def process_result_value(self, value: str | None, dialect: Any) -> str | None:
        if value is not None and value.startswith(self._PREFIX):
            return os.fsdecode(unquote_to_bytes(value[len(self._PREFIX):]))
        return value


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
    """A label an image passed, with its cosine score and its margin over the threshold (schema 3)."""

    __tablename__ = "image_tags"
    image_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    label: Mapped[str] = mapped_column(String, primary_key=True, index=True)
    score: Mapped[float] = mapped_column(Float)
    margin: Mapped[float] = mapped_column(Float)


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
    sidecars: Mapped[str] = mapped_column(String)  # see searchindex.keywords.sidecar_signature


# The full-text index over file names, image texts and captions lives in an FTS5
# virtual table, which SQLAlchemy's metadata cannot declare: it is created right
# after the ORM tables, with the same statement the migration uses.
event.listen(Base.metadata, "after_create", DDL(FTS_TABLE_SQL))


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


@dataclass(frozen=True)
class FailureRecord:
    """A file that could not be indexed, and why."""

    path: str
    size: int
    mtime_ns: int
    reason: str


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


_RECORD_COLUMNS = (
    "id", "path", "size", "mtime_ns", "sha256", "width", "height", "format", "indexed_at",
    "taken_at", "taken_offset", "date_source", "camera_make", "camera_model", "lens", "gps_lat", "gps_lon",
    "orientation",
)


def _bounding_box(lat: float, lon: float, radius_km: float) -> list[Any]:
    """SQL conditions for a lat/lon box that holds every point within ``radius_km`` of (lat, lon)."""
    dlat = math.degrees(radius_km / EARTH_RADIUS_KM)
    conds: list[Any] = [ImageRow.gps_lat.is_not(None), ImageRow.gps_lon.is_not(None),
                        ImageRow.gps_lat.between(lat - dlat, lat + dlat)]
    if abs(lat) + dlat >= 90:  # the circle reaches a pole: every longitude
        return conds
    dlon = math.degrees(math.asin(min(1.0, math.sin(radius_km / EARTH_RADIUS_KM) / math.cos(math.radians(lat)))))
    if dlon >= 180:
        return conds
    lo, hi = lon - dlon, lon + dlon
    if lo < -180:  # across the antimeridian: two ranges
        conds.append(or_(ImageRow.gps_lon >= lo + 360, ImageRow.gps_lon <= hi))
    elif hi > 180:
        conds.append(or_(ImageRow.gps_lon >= lo, ImageRow.gps_lon <= hi - 360))
    else:
        conds.append(ImageRow.gps_lon.between(lo, hi))
    return conds


def _executor(s: Session) -> Callable[[str, dict[str, Any]], Any]:
    """Run raw SQL with named parameters inside the session's transaction."""
    return lambda sql, params: s.execute(text(sql), params)


_WORD_RE = re.compile(r"\w+", re.UNICODE)


def _fts_words(query: str) -> list[str]:
    """The words of ``query`` as quoted FTS5 strings (so no word is read as syntax)."""
    return [f'"{w}"' for w in dict.fromkeys(w.lower() for w in _WORD_RE.findall(query))]


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL: readers never wait for the writer and the writer never waits for readers.
    # NORMAL is durable across process crashes in WAL mode (only an OS crash can
    # lose the last commits, and never corrupts the file).  Both are settings a
    # read-only connection may refuse; the WAL mode is stored in the file anyway.
    cur = dbapi_conn.cursor()
    for pragma in ("busy_timeout=30000", "journal_mode=WAL", "synchronous=NORMAL"):
        try:
            cur.execute(f"PRAGMA {pragma}")
        except sqlite3.OperationalError as exc:
            log.debug("PRAGMA %s refused: %s", pragma, exc)
    cur.close()


class Catalog:
    """SQLite catalog of one index folder."""

    def __init__(self, engine: Engine, path: Path) -> None:
        self._engine = engine
        self.path = path

    @staticmethod
    def _engine_for(path: Path, read_only: bool = False) -> Engine:
        if read_only:
            # A WAL database in a folder where SQLite cannot create its -shm file
            # opens only as immutable: nobody can write there, so nothing changes
            # under the reader.
            url = f"sqlite:///file:{quote(str(path))}?immutable=1&uri=true"
        else:
            url = f"sqlite:///{path}"
        engine = create_engine(url, future=True)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine

    @classmethod
    def create(
        cls, folder: Path, spec: ModelSpec, dim: int, factory: str, meta: dict[str, str] | None = None
    ) -> Catalog:
        """Create the catalog file in ``folder`` and record what the index is made of (plus ``meta``).

        The file is built under a temporary name and renamed into place, so a
        crash never leaves a catalog without its metadata.
        """
        path = folder / CATALOG_FILE
        tmp = folder / f".{CATALOG_FILE}.{os.getpid()}.tmp"
        for leftover in folder.glob(f".{CATALOG_FILE}.*.tmp*"):
            leftover.unlink()
        engine = cls._engine_for(tmp)
        try:
            Base.metadata.create_all(engine)
            with Session(engine) as s, s.begin():
                for key, value in {
                    "schema_version": str(SCHEMA_VERSION),
                    "model": spec.model,
                    "pretrained": spec.pretrained,
                    "checkpoint_sha256": spec.checkpoint_sha256 or "",
                    "dim": str(dim),
                    "faiss_factory": factory,
                    "generation": "0",
                    "index_id": uuid.uuid4().hex,  # the index's identity: its vector file must carry it
                    "created_at": str(time.time()),
                    **(meta or {}),
                }.items():
                    s.add(MetaRow(key=key, value=value))
        finally:
            engine.dispose()  # checkpoints and removes the temporary WAL
        os.replace(tmp, path)
        return cls(cls._engine_for(path), path)

    @classmethod
    def open(cls, folder: Path) -> Catalog:
        """Open read-write, or read-only when the folder cannot be written.

        A catalog from an older schema is upgraded first (see :mod:`searchindex.migrations`).

        Raises:
            IndexSchemaError: the catalog is newer than this code, or needs an
                upgrade but cannot be written.
        """
        path = folder / CATALOG_FILE
        engine = cls._engine_for(path)
        writable = True
        try:
            raw = engine.raw_connection()
            try:  # take (and drop) the write lock: fails at once on a read-only file or folder
                raw.execute("BEGIN IMMEDIATE")  # type: ignore[attr-defined]
                raw.rollback()
            finally:
                raw.close()
        except (OperationalError, sqlite3.OperationalError):
            engine.dispose()
            engine = cls._engine_for(path, read_only=True)
            writable = False
            log.info("%s is not writable: opened read-only", path)
        try:
            cls._upgrade(path, writable)
        except BaseException:
            engine.dispose()
            raise
        return cls(engine, path)

    @staticmethod
    def _upgrade(path: Path, writable: bool) -> None:
        if writable:
            db = sqlite3.connect(path, isolation_level=None, timeout=30)
        else:
            db = sqlite3.connect(f"file:{quote(str(path))}?immutable=1", uri=True)
        try:
            todo = pending(db)
            if todo and not writable:
                raise IndexSchemaError(
                    f"the index at {path.parent} was made by an older searchindex and must be upgraded "
                    f"({', '.join(m.name for m in todo)}), which needs write access to its folder"
                )
            if todo:
                upgrade(db)
        finally:
            db.close()

    def close(self) -> None:
        self._engine.dispose()

    # -- metadata ---------------------------------------------------------

    def meta(self) -> dict[str, str]:
        with Session(self._engine) as s:
            return {r.key: r.value for r in s.scalars(select(MetaRow))}

    def model_spec(self) -> ModelSpec:
        m = self.meta()
        return ModelSpec(m["model"], m["pretrained"], m.get("checkpoint_sha256") or None)

    def generation(self) -> int:
        with Session(self._engine) as s:
            return int(s.scalar(select(MetaRow.value).where(MetaRow.key == "generation")) or 0)

    # -- reads ------------------------------------------------------------

    def count(self) -> int:
        with Session(self._engine) as s:
            return int(s.scalar(select(func.count()).select_from(ImageRow)) or 0)

    def failure_count(self) -> int:
        with Session(self._engine) as s:
            return int(s.scalar(select(func.count()).select_from(FailureRow)) or 0)

    def image_states(self) -> dict[str, tuple[int, int, int, str]]:
        """path -> (id, size, mtime_ns, sha256) of every indexed image."""
        stmt = select(ImageRow.path, ImageRow.id, ImageRow.size, ImageRow.mtime_ns, ImageRow.sha256)
        with Session(self._engine) as s:
            return {p: (i, sz, mt, sha) for p, i, sz, mt, sha in s.execute(stmt)}

    def all_paths(self) -> list[str]:
        """Every path the catalog knows: indexed images, then recorded failures."""
        with Session(self._engine) as s:
            images = list(s.scalars(select(ImageRow.path).order_by(ImageRow.id)))
            return images + list(s.scalars(select(FailureRow.path).order_by(FailureRow.path)))

    def ids_without_metadata(self) -> set[int]:
        """Rows whose photo metadata was never read (indexed before schema 2)."""
        with Session(self._engine) as s:
            return set(s.scalars(select(ImageRow.id).where(ImageRow.date_source.is_(None))))

    def failure_states(self) -> dict[str, tuple[int, int, str]]:
        """path -> (size, mtime_ns, reason) of every recorded failure."""
        with Session(self._engine) as s:
            return {
                p: (sz, mt, why) for p, sz, mt, why in s.execute(
                    select(FailureRow.path, FailureRow.size, FailureRow.mtime_ns, FailureRow.reason))
            }

    def ids(self) -> np.ndarray:
        """The ids of every indexed image, sorted."""
        with Session(self._engine) as s:
            return np.array(sorted(s.scalars(select(ImageRow.id))), dtype=np.int64)

    def embeddings_by_id(self, ids: Sequence[int], dim: int) -> dict[int, np.ndarray]:
        out: dict[int, np.ndarray] = {}
        with Session(self._engine) as s:
            for start in range(0, len(ids), 500):
                chunk = list(ids[start : start + 500])
                for i, blob in s.execute(select(ImageRow.id, ImageRow.embedding).where(ImageRow.id.in_(chunk))):
                    out[i] = np.frombuffer(blob, dtype=np.float32).reshape(dim)
        return out

    def failures(self) -> list[FailureRecord]:
        with Session(self._engine) as s:
            return [
                FailureRecord(r.path, r.size, r.mtime_ns, r.reason)
                for r in s.scalars(select(FailureRow).order_by(FailureRow.path))
            ]

    def images_by_id(self, ids: Iterable[int]) -> dict[int, ImageRecord]:
        ids = list(ids)
        if not ids:
            return {}
        cols = [getattr(ImageRow, c) for c in _RECORD_COLUMNS]
        out: dict[int, ImageRecord] = {}
        with Session(self._engine) as s:
            for start in range(0, len(ids), 500):  # stay under SQLite's variable limit
                for row in s.execute(select(*cols).where(ImageRow.id.in_(ids[start : start + 500]))):
                    out[row[0]] = ImageRecord(*row)
        return out

    def filtered_ids(self, filters: Filters) -> np.ndarray:
        """The ids (sorted) of every image that meets ``filters``, found by one SQL query.

        A position filter is a bounding box in SQL, then the exact great-circle
        distance (NumPy) over the rows inside the box only.
        """
        with self._engine.connect() as conn:
            conds = self._conditions(filters, conn)
            # No ORDER BY: it would make SQLite walk the table (rows carry the embeddings)
            # in id order instead of using an index on the filtered columns; NumPy sorts.
            # Plain numbers: read them from the DBAPI cursor, skipping SQLAlchemy's per-row
            # result processing (most of the time of a 25k-row answer).
            if filters.near is None:
                rows = conn.execute(select(ImageRow.id).where(*conds)).cursor.fetchall()
                ids = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64, count=len(rows))
                return np.sort(ids)
            stmt = select(ImageRow.id, ImageRow.gps_lat, ImageRow.gps_lon).where(*conds)
            rows = conn.execute(stmt).cursor.fetchall()
        if not rows:
            return np.zeros(0, dtype=np.int64)
        arr = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.float64, count=3 * len(rows)).reshape(-1, 3)
        lat0, lon0 = filters.near
        keep = haversine_km(arr[:, 1], arr[:, 2], lat0, lon0) <= float(filters.radius_km or 0)
        return np.sort(arr[keep, 0].astype(np.int64))

    @staticmethod
    def _conditions(filters: Filters, conn: Any) -> list[Any]:
        """SQL conditions (ANDed) for ``filters``."""
        conds: list[Any] = []

        def matches(pattern: str) -> Any:
            exact, glob = glob_to_sqlite(pattern, filters.cwd)
            cond = ImageRow.path.op("GLOB", is_comparison=True)(glob)
            return cond if exact is None else or_(ImageRow.path == exact, cond)

        if filters.paths:
            conds.append(or_(*(matches(p) for p in filters.paths)))
        for pattern in filters.exclude:
            conds.append(not_(matches(pattern)))
        if filters.min_width:
            conds.append(ImageRow.width >= filters.min_width)
        if filters.min_height:
            conds.append(ImageRow.height >= filters.min_height)
        # taken_at is local wall-clock ISO text: it sorts and compares as text.
        if filters.after is not None:
            conds.append(ImageRow.taken_at >= filters.after)
        if filters.before is not None:
            conds.append(ImageRow.taken_at < filters.before)
        if filters.cameras:
            # A collection holds a handful of distinct cameras: match the texts against
            # those (read from the camera index), then select the rows by exact value.
            wanted = [c.lower() for c in filters.cameras]
            cameras = conn.execute(select(ImageRow.camera_make, ImageRow.camera_model).distinct()).all()
            chosen = [(make, model) for make, model in cameras
                      if any(w in f"{make or ''} {model or ''}".lower() for w in wanted)]
            conds.append(or_(false(), *(
                and_(ImageRow.camera_make.is_(None) if make is None else ImageRow.camera_make == make,
                     ImageRow.camera_model.is_(None) if model is None else ImageRow.camera_model == model)
                for make, model in chosen
            )))
        if filters.near is not None:
            conds += _bounding_box(*filters.near, float(filters.radius_km or 0))
        return conds

    def embeddings_since(self, generation: int, dim: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, vectors) chunks of every row written after ``generation``."""
        stmt = select(ImageRow.id, ImageRow.embedding).where(ImageRow.generation > generation).order_by(ImageRow.id)
        with Session(self._engine) as s:
            result = s.execute(stmt).yield_per(10_000)
            for chunk in result.partitions():
                ids = np.fromiter((r[0] for r in chunk), dtype=np.int64, count=len(chunk))
                vecs = np.frombuffer(b"".join(r[1] for r in chunk), dtype=np.float32).reshape(len(chunk), dim)
                yield ids, vecs

    def removed_since(self, generation: int) -> np.ndarray:
        with Session(self._engine) as s:
            ids = s.scalars(select(RemovalRow.image_id).where(RemovalRow.generation > generation)).all()
        return np.asarray(ids, dtype=np.int64)

    # -- writes -----------------------------------------------------------

    def commit_batch(
        self,
        images: Sequence[NewImage] = (),
        failures: Sequence[FailureRecord] = (),
        *,
        touched: Sequence[tuple[int, int, int]] = (),
        moved: Sequence[tuple[int, str, int, int]] = (),
        deleted: Sequence[str] = (),
        metadata: Sequence[tuple[int, PhotoMetadata]] = (),
    ) -> int:
        """Write one batch of changes atomically and return the new generation.

        Args:
            images: rows to write with their embeddings; a row with the same path
                is replaced in place (keeping its id).
            failures: files that could not be indexed; an image row at that path
                is deleted and its vector scheduled for removal.
            touched: (id, size, mtime_ns) of rows whose file changed its stat but
                not its content: only the stat is updated, the vector stays.
            moved: (id, new_path, size, mtime_ns) of rows whose content now lives
                at another path: the row (and its vector) follows the file.
            deleted: paths whose rows and failure records go away.
            metadata: (id, metadata) of rows whose photo metadata is (re)read
                without re-encoding (touched, moved, or indexed before schema 2).
        """
        now = time.time()
        with Session(self._engine) as s, s.begin():
            gen_row = s.get(MetaRow, "generation")
            assert gen_row is not None
            gen = int(gen_row.value) + 1
            gen_row.value = str(gen)
            gone = list(deleted) + [f.path for f in failures]
            text_ids: list[int] = []  # rows whose full-text entry must be rewritten
            for start in range(0, len(gone), 500):
                chunk = gone[start : start + 500]
                gone_ids = list(s.scalars(select(ImageRow.id).where(ImageRow.path.in_(chunk))))
                for image_id in gone_ids:
                    s.merge(RemovalRow(image_id=image_id, generation=gen))
                s.execute(delete(ImageTagRow).where(ImageTagRow.image_id.in_(gone_ids)))
                s.execute(delete(CaptionRow).where(CaptionRow.image_id.in_(gone_ids)))
                s.execute(delete(ImageTextRow).where(ImageTextRow.image_id.in_(gone_ids)))
                s.execute(delete(TextStateRow).where(TextStateRow.image_id.in_(gone_ids)))
                text_ids.extend(gone_ids)
                s.execute(delete(ImageRow).where(ImageRow.path.in_(chunk)))
                s.execute(delete(FailureRow).where(FailureRow.path.in_(chunk)))
            for image_id, size, mtime_ns in touched:
                s.execute(update(ImageRow).where(ImageRow.id == image_id).values(size=size, mtime_ns=mtime_ns))
            for image_id, path, size, mtime_ns in moved:
                s.execute(
                    update(ImageRow).where(ImageRow.id == image_id).values(path=path, size=size, mtime_ns=mtime_ns)
                )
                text_ids.append(image_id)
            for image_id, meta in metadata:
                s.execute(update(ImageRow).where(ImageRow.id == image_id).values(**meta.columns()))
            paths = [im.path for im in images]
            existing = dict(s.execute(select(ImageRow.path, ImageRow.id).where(ImageRow.path.in_(paths))).all())
            for im in images:
                values = dict(
                    size=im.size,
                    mtime_ns=im.mtime_ns,
                    sha256=im.sha256,
                    width=im.width,
                    height=im.height,
                    format=im.format,
                    indexed_at=now,
                    generation=gen,
                    embedding=np.ascontiguousarray(im.embedding, dtype=np.float32).tobytes(),
                    **(im.meta.columns() if im.meta else {}),
                )
                if im.path in existing:
                    s.execute(update(ImageRow).where(ImageRow.id == existing[im.path]).values(**values))
                    # New content: its tags are recomputed by the next tagging pass, and
                    # captions of the old picture no longer describe it.
                    s.execute(delete(ImageTagRow).where(ImageTagRow.image_id == existing[im.path]))
                    s.execute(delete(CaptionRow).where(CaptionRow.image_id == existing[im.path]))
                else:
                    s.add(ImageRow(path=im.path, **values))
            if paths:
                s.flush()
                for start in range(0, len(paths), 500):
                    text_ids.extend(s.scalars(select(ImageRow.id).where(ImageRow.path.in_(paths[start : start + 500]))))
            fixed = paths + [m[1] for m in moved]
            if fixed:
                s.execute(delete(FailureRow).where(FailureRow.path.in_(fixed)))
            for f in failures:
                s.merge(FailureRow(path=f.path, size=f.size, mtime_ns=f.mtime_ns, reason=f.reason, failed_at=now))
            if text_ids:
                refresh_text_index(_executor(s), text_ids)
        return gen

    # -- captions and text people wrote (schema 5) ---------------------------

    def store_captions(self, rows: Sequence[tuple[int, str, str, str]]) -> None:
        """Save (image_id, model, prompt, text) captions in one transaction, replacing any
        earlier caption of the same image by the same model.  Ids no longer in the
        catalog (deleted meanwhile) are skipped."""
        now = time.time()
        ids = sorted({int(r[0]) for r in rows})
        with Session(self._engine) as s, s.begin():
            alive = self._alive(s, ids)
            for image_id, model, prompt, caption in rows:
                if int(image_id) in alive:
                    s.merge(CaptionRow(image_id=int(image_id), model=model, prompt=prompt or "",
                                       text=caption, created_at=now))
            refresh_text_index(_executor(s), sorted(alive))

    def ids_without_caption(self, model: str) -> list[int]:
        """Ids of images (ascending) with no caption from ``model`` yet."""
        done = select(CaptionRow.image_id).where(CaptionRow.model == model)
        with Session(self._engine) as s:
            return list(s.scalars(select(ImageRow.id).where(ImageRow.id.not_in(done)).order_by(ImageRow.id)))

    def caption_counts(self) -> list[tuple[str, int]]:
        """(model, captioned images) for every captioning model, by model."""
        stmt = select(CaptionRow.model, func.count()).group_by(CaptionRow.model).order_by(CaptionRow.model)
        with Session(self._engine) as s:
            return [(m, int(n)) for m, n in s.execute(stmt)]

    def captions_by_id(self, ids: Iterable[int]) -> dict[int, list[tuple[str, str]]]:
        """image id -> [(model, caption)], oldest caption first."""
        return self._texts_by_id(ids, CaptionRow.model, CaptionRow.text, CaptionRow.created_at)

    def captions_by_content(self) -> list[tuple[str, str, str, str]]:
        """(sha256, model, prompt, caption) of every caption: what a reindex carries over,
        since a caption describes the picture, whatever model embeds it."""
        stmt = select(ImageRow.sha256, CaptionRow.model, CaptionRow.prompt, CaptionRow.text).join(
            ImageRow, ImageRow.id == CaptionRow.image_id)
        with Session(self._engine) as s:
            return [tuple(r) for r in s.execute(stmt)]  # type: ignore[misc]

    def store_texts(self, texts: Mapping[int, Sequence[tuple[str, str]]]) -> None:
        """Replace the image_texts of the given ids with their (source, text) pairs
        (an empty sequence clears them), in one transaction."""
        ids = sorted(int(i) for i in texts)
        with Session(self._engine) as s, s.begin():
            for start in range(0, len(ids), 500):
                s.execute(delete(ImageTextRow).where(ImageTextRow.image_id.in_(ids[start : start + 500])))
            alive = self._alive(s, ids)
            s.add_all(ImageTextRow(image_id=i, source=source, text=value)
                      for i in ids if i in alive for source, value in dict(texts[i]).items())
            refresh_text_index(_executor(s), ids)

    def text_states(self) -> dict[int, str]:
        """image id -> sidecar signature, for every image whose texts were read."""
        # Plain pairs for every image of a re-run: skip SQLAlchemy's per-row processing.
        with self._engine.connect() as conn:
            return dict(conn.execute(select(TextStateRow.image_id, TextStateRow.sidecars)).cursor.fetchall())

    def store_text_states(self, states: Mapping[int, str]) -> None:
        """Record that the texts of these images were read, with their sidecars' signatures."""
        ids = sorted(int(i) for i in states)
        with Session(self._engine) as s, s.begin():
            alive = self._alive(s, ids)
            for i in ids:
                if i in alive:
                    s.merge(TextStateRow(image_id=i, sidecars=states[i]))

    def texts_by_id(self, ids: Iterable[int]) -> dict[int, list[tuple[str, str]]]:
        """image id -> [(source, text)], by source."""
        return self._texts_by_id(ids, ImageTextRow.source, ImageTextRow.text, ImageTextRow.source)

    def has_text(self) -> bool:
        """Whether any image has a caption or a text people wrote."""
        with Session(self._engine) as s:
            return bool(s.scalar(select(func.count()).select_from(select(CaptionRow.image_id).limit(1).subquery()))
                        or s.scalar(select(func.count()).select_from(
                            select(ImageTextRow.image_id).limit(1).subquery())))

    def text_search(self, query: str, limit: int, ids: np.ndarray | None = None) -> list[tuple[int, float]]:
        """Full-text search over file names, image texts and captions: (image_id, score),
        best first, where score is BM25 negated (higher is better).

        The words of ``query`` are matched as plain terms (no FTS5 syntax reaches
        SQLite, so quotes, ``-`` or ``NEAR`` in user text are just words); images
        with every word come first, and when fewer than ``limit`` have them all,
        images with any of them follow.  ``ids`` restricts the results (filters).
        """
        words = _fts_words(query)
        if not words or limit <= 0:
            return []
        allowed = None if ids is None else set(np.asarray(ids, dtype=np.int64).tolist())
        out: dict[int, float] = {}
        stmt = text(
            "SELECT rowid, bm25(text_fts, 1.0, 2.0, 1.0) FROM text_fts WHERE text_fts MATCH :q ORDER BY 2"
        )
        with Session(self._engine) as s:
            for joiner in (" AND ", " OR ") if len(words) > 1 else (" AND ",):
                ranked = []
                for image_id, bm25 in s.execute(stmt, {"q": joiner.join(words)}):
                    if image_id not in out and (allowed is None or image_id in allowed):
                        ranked.append((int(image_id), -float(bm25)))
                if joiner == " OR " and ranked and out:
                    # OR hits rank below every AND hit, whatever their BM25.
                    shift = ranked[0][1] - min(out.values()) + 1e-6
                    ranked = [(i, score - shift) for i, score in ranked]
                out.update(ranked)
                if len(out) >= limit:
                    break
        return sorted(out.items(), key=lambda kv: -kv[1])[:limit]

    @staticmethod
    def _alive(s: Session, ids: Sequence[int]) -> set[int]:
        alive: set[int] = set()
        for start in range(0, len(ids), 500):
            alive.update(s.scalars(select(ImageRow.id).where(ImageRow.id.in_(list(ids[start : start + 500])))))
        return alive

    def _texts_by_id(self, ids: Iterable[int], key: Any, value: Any, order: Any) -> dict[int, list[tuple[str, str]]]:
        ids = [int(i) for i in ids]
        table = key.class_
        out: dict[int, list[tuple[str, str]]] = {}
        with Session(self._engine) as s:
            for start in range(0, len(ids), 500):
                stmt = (select(table.image_id, key, value).where(table.image_id.in_(ids[start : start + 500]))
                        .order_by(table.image_id, order))
                for image_id, k, v in s.execute(stmt):
                    out.setdefault(image_id, []).append((k, v))
        return out

    # -- zero-shot tags (see searchindex.tagging) ---------------------------

    def tag_labels(self) -> list[TagLabel]:
        """Every stored label, by name."""
        with Session(self._engine) as s:
            return [
                TagLabel(r.name, tuple(json.loads(r.templates)), np.frombuffer(r.classifier, dtype=np.float32),
                         np.frombuffer(r.null_classifier, dtype=np.float32), r.threshold, r.calibrated_images,
                         r.scored_generation)
                for r in s.scalars(select(TagLabelRow).order_by(TagLabelRow.name))
            ]

    def store_tags(
        self,
        label: TagLabel,
        scored_ids: np.ndarray,
        tags: Sequence[tuple[int, float, float]],
        *,
        replace_all: bool = False,
    ) -> None:
        """Save ``label`` and its tagging of ``scored_ids`` in one transaction.

        Args:
            scored_ids: images that were scored; their old tags of this label go.
            tags: (image_id, score, margin) of those that passed.
            replace_all: every image was scored: drop all old tags of the label.
        """
        now = time.time()
        with Session(self._engine) as s, s.begin():
            s.merge(TagLabelRow(
                name=label.name, templates=json.dumps(list(label.templates)),
                classifier=np.ascontiguousarray(label.classifier, dtype=np.float32).tobytes(),
                null_classifier=np.ascontiguousarray(label.null_classifier, dtype=np.float32).tobytes(),
                threshold=float(label.threshold), calibrated_images=int(label.calibrated_images),
                scored_generation=int(label.scored_generation), created_at=now,
            ))
            if replace_all:
                s.execute(delete(ImageTagRow).where(ImageTagRow.label == label.name))
            else:
                ids = [int(i) for i in scored_ids]
                for start in range(0, len(ids), 500):
                    s.execute(delete(ImageTagRow).where(
                        ImageTagRow.label == label.name, ImageTagRow.image_id.in_(ids[start : start + 500])))
            # Only images still in the catalog: a concurrent delete must not leave orphans.
            alive = set()
            tag_ids = [int(t[0]) for t in tags]
            for start in range(0, len(tag_ids), 500):
                alive.update(s.scalars(select(ImageRow.id).where(ImageRow.id.in_(tag_ids[start : start + 500]))))
            s.add_all(ImageTagRow(image_id=int(i), label=label.name, score=float(sc), margin=float(m))
                      for i, sc, m in tags if int(i) in alive)

    def remove_labels(self, names: Sequence[str]) -> int:
        """Forget labels and their tags; return how many labels existed."""
        with Session(self._engine) as s, s.begin():
            n = len(s.scalars(select(TagLabelRow.name).where(TagLabelRow.name.in_(list(names)))).all())
            s.execute(delete(ImageTagRow).where(ImageTagRow.label.in_(list(names))))
            s.execute(delete(TagLabelRow).where(TagLabelRow.name.in_(list(names))))
        return n

    def tag_counts(self) -> list[tuple[str, int]]:
        """(label, number of tagged images) for every label, including those with none."""
        with Session(self._engine) as s:
            counts = dict(s.execute(select(ImageTagRow.label, func.count()).group_by(ImageTagRow.label)).all())
            return [(name, int(counts.get(name, 0)))
                    for name in s.scalars(select(TagLabelRow.name).order_by(TagLabelRow.name))]

    def ids_with_tag(self, label: str) -> np.ndarray:
        with Session(self._engine) as s:
            ids = s.scalars(select(ImageTagRow.image_id).where(ImageTagRow.label == label)).all()
        return np.asarray(sorted(ids), dtype=np.int64)

    def tags_by_id(self, ids: Iterable[int]) -> dict[int, list[tuple[str, float]]]:
        """image id -> [(label, margin)], strongest first."""
        ids = [int(i) for i in ids]
        out: dict[int, list[tuple[str, float]]] = {}
        with Session(self._engine) as s:
            for start in range(0, len(ids), 500):
                stmt = select(ImageTagRow.image_id, ImageTagRow.label, ImageTagRow.margin).where(
                    ImageTagRow.image_id.in_(ids[start : start + 500]))
                for image_id, label, margin in s.execute(stmt):
                    out.setdefault(image_id, []).append((label, margin))
        for tags in out.values():
            tags.sort(key=lambda t: (-t[1], t[0]))
        return out

    def image_ids_by_path(self, paths: Sequence[str]) -> dict[str, int]:
        with Session(self._engine) as s:
            return dict(s.execute(select(ImageRow.path, ImageRow.id).where(ImageRow.path.in_(list(paths)))).all())

    def set_meta(self, **values: Any) -> None:
        with Session(self._engine) as s, s.begin():
            for key, value in values.items():
                s.merge(MetaRow(key=key, value=value if isinstance(value, str) else json.dumps(value)))
