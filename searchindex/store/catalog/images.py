"""Image rows and failure records: what is indexed, with its embedding; what failed, and why."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from ...results import FailureRecord
from .records import ImageState
from .schema import FailureRow, ImageRow

__all__ = ["ImageRepository"]


class ImageRepository:
    """The ``images`` and ``failures`` tables (reads; :meth:`Catalog.commit_batch` writes them).

    The reads a search makes are :class:`~searchindex.store.catalog.reader.CatalogReader`'s.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def count(self) -> int:
        """Number of indexed images."""
        with Session(self._engine) as s:
            return int(s.scalar(select(func.count()).select_from(ImageRow)) or 0)

    def failure_count(self) -> int:
        """Number of recorded failures."""
        with Session(self._engine) as s:
            return int(s.scalar(select(func.count()).select_from(FailureRow)) or 0)

    def states(self) -> dict[str, ImageState]:
        """path -> state of every indexed image."""
        stmt = select(ImageRow.path, ImageRow.id, ImageRow.size, ImageRow.mtime_ns, ImageRow.sha256)
        with Session(self._engine) as s:
            return {p: ImageState(i, sz, mt, sha) for p, i, sz, mt, sha in s.execute(stmt)}

    def all_paths(self) -> list[str]:
        """Every path the catalog knows: indexed images, then recorded failures."""
        with Session(self._engine) as s:
            images = list(s.scalars(select(ImageRow.path).order_by(ImageRow.id)))
            return images + list(s.scalars(select(FailureRow.path).order_by(FailureRow.path)))

    def ids_without_metadata(self) -> set[int]:
        """Rows whose photo metadata was never read (indexed before schema 2)."""
        with Session(self._engine) as s:
            return set(s.scalars(select(ImageRow.id).where(ImageRow.date_source.is_(None))))

    def failures(self) -> list[FailureRecord]:
        """Every recorded failure, by path."""
        with Session(self._engine) as s:
            return [
                FailureRecord(r.path, r.size, r.mtime_ns, r.reason)
                for r in s.scalars(select(FailureRow).order_by(FailureRow.path))
            ]
