"""The catalog: SQLite, the index's source of truth.

One row per image with its metadata *and* its embedding, written in the same
transaction; failures with their reasons; and the index's metadata (model,
vector size, schema version, generation).  Every committed batch bumps the
generation, and each changed row carries the generation that wrote it, so the
FAISS file (a cache) can be caught up from exactly what changed since it was saved.

:class:`Catalog` owns the file's lifecycle, its metadata and the one batch writer.
Every read goes through one door, :attr:`Catalog.read` (:mod:`searchindex.store.catalog.reader`,
plain :mod:`sqlite3`); the smaller writes go through one repository per concern, in the way
sqlite-utils hands out a ``Table`` per table: :attr:`Catalog.texts`, :attr:`Catalog.captions`,
:attr:`Catalog.tags` and :attr:`Catalog.concepts`.  Writes go through SQLAlchemy, whose engine
and the repositories are made on first use, so that a search never imports SQLAlchemy.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from ...errors import IndexCorruptError, IndexSchemaError
from ...models.spec import ModelSpec
from ...results import FailureRecord
from ...threads import forks
from .migrations import SCHEMA_VERSION, pending, upgrade
from .reader import CatalogReader
from .records import NewImage, PhotoMetadata
from .sqlite import CATALOG_FILE, catalog_uri, check_meta, chunks, damaged, is_damage

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from .captions import CaptionRepository
    from .concepts import ConceptRepository
    from .ocr import OcrRepository
    from .tags import TagRepository
    from .texts import TextRepository

__all__ = ["Catalog"]

log = logging.getLogger(__name__)

class _Repositories(NamedTuple):
    texts: TextRepository
    captions: CaptionRepository
    tags: TagRepository
    concepts: ConceptRepository


class Catalog:
    """SQLite catalog of one index folder."""

    def __init__(self, path: Path, read_only: bool = False) -> None:
        self.path = path
        self.read_only = read_only
        #: The reads a search makes, through plain sqlite3 (see :mod:`searchindex.store.catalog.reader`).
        self.read = CatalogReader(path, read_only)
        self._engine: Engine | None = None
        self._repositories: _Repositories | None = None
        self._making = threading.Lock()
        self._forks = forks()

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine every write goes through."""
        return self._made()[0]

    def _made(self) -> tuple[Engine, _Repositories]:
        """The engine and the repositories, made together on first use (from any thread)."""
        with self._making:
            if self._engine is not None and self._forks != forks():
                # Made before this process was forked: its pooled connections are the parent's,
                # which SQLAlchemy drops without closing, so the child opens its own.
                self._engine.dispose(close=False)
            self._forks = forks()
            if self._engine is None or self._repositories is None:
                from .captions import CaptionRepository
                from .concepts import ConceptRepository
                from .schema import engine_for
                from .tags import TagRepository
                from .texts import TextRepository

                engine = engine_for(self.path, read_only=self.read_only)
                self._engine, self._repositories = engine, _Repositories(
                    TextRepository(engine), CaptionRepository(engine), TagRepository(engine), ConceptRepository(engine))
            return self._engine, self._repositories

    @property
    def texts(self) -> TextRepository:
        """The texts people wrote and the full-text index."""
        return self._made()[1].texts

    @property
    def captions(self) -> CaptionRepository:
        """Generated captions."""
        return self._made()[1].captions

    @property
    def tags(self) -> TagRepository:
        """Zero-shot tag labels and the tags of each image."""
        return self._made()[1].tags

    @property
    def ocr(self) -> OcrRepository:
        """Text read in photos (``searchindex ocr``)."""
        from .ocr import OcrRepository

        return OcrRepository(self.engine, self.read)

    @property
    def concepts(self) -> ConceptRepository:
        """Saved concepts (a query with its liked and unliked examples)."""
        return self._made()[1].concepts

    @classmethod
    def create(
        cls, folder: Path, spec: ModelSpec, dim: int, factory: str, meta: dict[str, str] | None = None
    ) -> Catalog:
        """Create the catalog file in ``folder`` and record what the index is made of (plus ``meta``).

        The file is built under a temporary name and renamed into place, so a
        crash never leaves a catalog without its metadata.
        """
        from sqlalchemy.orm import Session

        from .schema import Base, MetaRow, engine_for

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
        return cls(path)

    @classmethod
    def open(cls, folder: Path) -> Catalog:
        """Open read-write, or read-only when the folder cannot be written.

        A catalog from an older schema is upgraded first (see :mod:`searchindex.store.catalog.migrations`).

        Raises:
            IndexSchemaError: the catalog is newer than this code, or needs an
                upgrade but cannot be written.
        """
        path = folder / CATALOG_FILE
        writable = True
        try:
            db = sqlite3.connect(catalog_uri(path, read_only=False), uri=True, isolation_level=None, timeout=30)
            try:  # take (and drop) the write lock: fails at once on a read-only file or folder
                db.execute("BEGIN IMMEDIATE")
                db.rollback()
            finally:
                db.close()
        except sqlite3.OperationalError as exc:
            if is_damage(exc):
                raise damaged(path, exc) from exc
            writable = False
            log.info("%s is not writable: opened read-only", path)
        except sqlite3.DatabaseError as exc:
            if is_damage(exc):
                raise damaged(path, exc) from exc
            raise
        try:
            cls._upgrade(path, writable)
        except IndexCorruptError as exc:
            raise damaged(path, exc) from exc
        except sqlite3.DatabaseError as exc:
            if is_damage(exc):
                raise damaged(path, exc) from exc
            raise
        return cls(path, read_only=not writable)

    @staticmethod
    def _upgrade(path: Path, writable: bool) -> None:
        db = sqlite3.connect(catalog_uri(path, read_only=not writable), uri=True, isolation_level=None, timeout=30)
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
        with self._making:
            engine, self._engine, self._repositories = self._engine, None, None
        if engine is not None:
            engine.dispose(close=self._forks == forks())  # a forked child must not close the parent's
        self.read.close()

    # -- metadata ---------------------------------------------------------

    def set_meta(self, **values: Any) -> None:
        """Set ``meta`` keys (strings as they are, anything else as JSON)."""
        from sqlalchemy.orm import Session

        from .schema import MetaRow

        with Session(self.engine) as s, s.begin():
            for key, value in values.items():
                s.merge(MetaRow(key=key, value=value if isinstance(value, str) else json.dumps(value)))

    def prune_states(self, below: int) -> None:
        """Forget the state tokens of generations before ``below`` (under the writer lock)."""
        from sqlalchemy import delete, select
        from sqlalchemy.orm import Session

        from .schema import MetaRow

        with Session(self.engine) as s, s.begin():
            keys = s.scalars(select(MetaRow.key).where(MetaRow.key.like("state:%"))).all()
            old = [k for k in keys if k[6:].isdigit() and int(k[6:]) < below]
            for chunk in chunks(old):
                s.execute(delete(MetaRow).where(MetaRow.key.in_(chunk)))

    def model_spec(self) -> ModelSpec:
        """The model recorded at creation (read from ``meta``; made here, where :meth:`create` records it,
        so that the catalog's one import of a model type stays in this module)."""
        m = self.read.meta()
        return ModelSpec(m["model"], m["pretrained"], m.get("checkpoint_sha256") or None)

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
        from .batch import commit_batch

        return commit_batch(self.engine, images, failures, touched, moved, deleted, metadata)
