"""The catalog: SQLite through SQLAlchemy, the index's source of truth.

One row per image with its metadata *and* its embedding, written in the same
transaction; failures with their reasons; and the index's metadata (model,
vector size, schema version, generation).  Every committed batch bumps the
generation, and each changed row carries the generation that wrote it, so the
FAISS file (a cache) can be caught up from exactly what changed since it was saved.

:class:`Catalog` owns the file's lifecycle, its metadata and the one batch
writer; reads and the smaller writes go through one repository per concern, in
the way sqlite-utils hands out a ``Table`` per table: :attr:`Catalog.images`,
:attr:`Catalog.texts`, :attr:`Catalog.captions`, :attr:`Catalog.tags` and :attr:`Catalog.concepts`.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
from sqlalchemy import delete, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from ..errors import IndexCorruptError, IndexSchemaError
from ..models.spec import ModelSpec
from .captions import CaptionRepository
from .concepts import ConceptRepository
from .images import ImageRepository
from .migrations import SCHEMA_VERSION, pending, refresh_text_index, upgrade
from .records import FailureRecord, ImageRecord, NewImage, PhotoMetadata, TagLabel
from .schema import (
    CATALOG_FILE,
    Base,
    CaptionRow,
    FailureRow,
    ImageRow,
    ImageTagRow,
    ImageTextRow,
    MetaRow,
    RemovalRow,
    TextStateRow,
    check_meta,
    damaged,
    engine_for,
    executor,
    is_damage,
)
from .tags import TagRepository
from .texts import TextRepository

__all__ = ["CATALOG_FILE", "SCHEMA_VERSION", "Catalog", "FailureRecord", "ImageRecord", "NewImage", "TagLabel"]

log = logging.getLogger(__name__)


class Catalog:
    """SQLite catalog of one index folder."""

    def __init__(self, engine: Engine, path: Path) -> None:
        self._engine = engine
        self.path = path
        self.images = ImageRepository(engine)
        self.texts = TextRepository(engine)
        self.captions = CaptionRepository(engine)
        self.tags = TagRepository(engine)
        self.concepts = ConceptRepository(engine)

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
        engine = engine_for(tmp)
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
        return cls(engine_for(path), path)

    @classmethod
    def open(cls, folder: Path) -> Catalog:
        """Open read-write, or read-only when the folder cannot be written.

        A catalog from an older schema is upgraded first (see :mod:`searchindex.store.migrations`).

        Raises:
            IndexSchemaError: the catalog is newer than this code, or needs an
                upgrade but cannot be written.
        """
        path = folder / CATALOG_FILE
        engine = engine_for(path)
        writable = True
        try:
            raw = engine.raw_connection()
            try:  # take (and drop) the write lock: fails at once on a read-only file or folder
                raw.execute("BEGIN IMMEDIATE")
                raw.rollback()
            except sqlite3.DatabaseError as exc:
                if is_damage(exc):
                    engine.dispose()
                    raise damaged(path, exc) from exc
                raise
            finally:
                raw.close()
        except (OperationalError, sqlite3.OperationalError) as exc:
            engine.dispose()
            if is_damage(exc):
                raise damaged(path, getattr(exc, "orig", exc)) from exc
            engine = engine_for(path, read_only=True)
            writable = False
            log.info("%s is not writable: opened read-only", path)
        try:
            cls._upgrade(path, writable)
        except IndexCorruptError as exc:
            engine.dispose()
            raise damaged(path, exc) from exc
        except sqlite3.DatabaseError as exc:
            engine.dispose()
            if is_damage(exc):
                raise damaged(path, exc) from exc
            raise
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
            check_meta(db)
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
        """Every key of the ``meta`` table (model, dim, generation, FAISS settings...)."""
        with Session(self._engine) as s:
            return {r.key: r.value for r in s.scalars(select(MetaRow))}

    def set_meta(self, **values: Any) -> None:
        """Set ``meta`` keys (strings as they are, anything else as JSON)."""
        with Session(self._engine) as s, s.begin():
            for key, value in values.items():
                s.merge(MetaRow(key=key, value=value if isinstance(value, str) else json.dumps(value)))

    def model_spec(self) -> ModelSpec:
        """The model recorded at creation."""
        m = self.meta()
        return ModelSpec(m["model"], m["pretrained"], m.get("checkpoint_sha256") or None)

    def generation(self) -> int:
        """The generation of the last committed batch."""
        with Session(self._engine) as s:
            return int(s.scalar(select(MetaRow.value).where(MetaRow.key == "generation")) or 0)

    # -- the batch writer -------------------------------------------------

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
            text_ids = _remove_rows(s, list(deleted) + [f.path for f in failures], gen)  # full-text entries to redo
            text_ids += _update_rows(s, touched, moved, metadata)
            paths = [im.path for im in images]
            text_ids += _write_images(s, images, gen, now)
            fixed = paths + [m[1] for m in moved]
            if fixed:
                s.execute(delete(FailureRow).where(FailureRow.path.in_(fixed)))
            for f in failures:
                s.merge(FailureRow(path=f.path, size=f.size, mtime_ns=f.mtime_ns, reason=f.reason, failed_at=now))
            if text_ids:
                refresh_text_index(executor(s), text_ids)
        return gen


# -- the steps of Catalog.commit_batch, inside its transaction -------------------------------


def _remove_rows(s: Session, gone: list[str], gen: int) -> list[int]:
    """Delete the rows (and failure records) at ``gone`` with what hangs off them, scheduling their
    vectors for removal at ``gen``; returns the ids removed."""
    removed: list[int] = []
    for start in range(0, len(gone), 500):
        chunk = gone[start : start + 500]
        gone_ids = list(s.scalars(select(ImageRow.id).where(ImageRow.path.in_(chunk))))
        for image_id in gone_ids:
            s.merge(RemovalRow(image_id=image_id, generation=gen))
        s.execute(delete(ImageTagRow).where(ImageTagRow.image_id.in_(gone_ids)))
        s.execute(delete(CaptionRow).where(CaptionRow.image_id.in_(gone_ids)))
        s.execute(delete(ImageTextRow).where(ImageTextRow.image_id.in_(gone_ids)))
        s.execute(delete(TextStateRow).where(TextStateRow.image_id.in_(gone_ids)))
        removed.extend(gone_ids)
        s.execute(delete(ImageRow).where(ImageRow.path.in_(chunk)))
        s.execute(delete(FailureRow).where(FailureRow.path.in_(chunk)))
    return removed


def _update_rows(s: Session, touched: Sequence[tuple[int, int, int]], moved: Sequence[tuple[int, str, int, int]],
                 metadata: Sequence[tuple[int, PhotoMetadata]]) -> list[int]:
    """Rows that keep their vector: new stat, new path, new metadata; returns the ids that moved."""
    for image_id, size, mtime_ns in touched:
        s.execute(update(ImageRow).where(ImageRow.id == image_id).values(size=size, mtime_ns=mtime_ns))
    for image_id, path, size, mtime_ns in moved:
        s.execute(update(ImageRow).where(ImageRow.id == image_id).values(path=path, size=size, mtime_ns=mtime_ns))
    for image_id, meta in metadata:
        s.execute(update(ImageRow).where(ImageRow.id == image_id).values(**meta.columns()))
    return [m[0] for m in moved]


def _write_images(s: Session, images: Sequence[NewImage], gen: int, now: float) -> list[int]:
    """Insert the new rows, replace those at the same path in place (keeping the id); returns their ids."""
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
    ids: list[int] = []
    if paths:
        s.flush()
        for start in range(0, len(paths), 500):
            ids.extend(s.scalars(select(ImageRow.id).where(ImageRow.path.in_(paths[start : start + 500]))))
    return ids
