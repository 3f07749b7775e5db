"""Image rows and failure records: what is indexed, with its embedding; what failed, and why."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from .filters import Filters, filtered_ids
from .records import RECORD_COLUMNS, FailureRecord, ImageRecord
from .schema import FailureRow, ImageRow, RemovalRow

__all__ = ["ImageRepository"]


class ImageRepository:
    """The ``images`` and ``failures`` tables (reads; :meth:`Catalog.commit_batch` writes them)."""

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

    def states(self) -> dict[str, tuple[int, int, int, str]]:
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

    def embeddings(self, ids: Sequence[int], dim: int) -> dict[int, np.ndarray]:
        """image id -> embedding (``dim`` float32) of those ``ids`` still indexed."""
        out: dict[int, np.ndarray] = {}
        with Session(self._engine) as s:
            for start in range(0, len(ids), 500):
                chunk = list(ids[start : start + 500])
                for i, blob in s.execute(select(ImageRow.id, ImageRow.embedding).where(ImageRow.id.in_(chunk))):
                    out[i] = np.frombuffer(blob, dtype=np.float32).reshape(dim)
        return out

    def failures(self) -> list[FailureRecord]:
        """Every recorded failure, by path."""
        with Session(self._engine) as s:
            return [
                FailureRecord(r.path, r.size, r.mtime_ns, r.reason)
                for r in s.scalars(select(FailureRow).order_by(FailureRow.path))
            ]

    def by_id(self, ids: Iterable[int]) -> dict[int, ImageRecord]:
        """image id -> record (without the embedding) of those ``ids`` still indexed."""
        ids = list(ids)
        if not ids:
            return {}
        cols = [getattr(ImageRow, c) for c in RECORD_COLUMNS]
        out: dict[int, ImageRecord] = {}
        with Session(self._engine) as s:
            for start in range(0, len(ids), 500):  # stay under SQLite's variable limit
                for row in s.execute(select(*cols).where(ImageRow.id.in_(ids[start : start + 500]))):
                    out[row[0]] = ImageRecord(*row)
        return out

    def filtered_ids(self, filters: Filters) -> np.ndarray:
        """The sorted ids of every image meeting ``filters`` (see :func:`.filters.filtered_ids`)."""
        return filtered_ids(self._engine, filters)

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
        """Ids removed by the batches committed after ``generation``."""
        with Session(self._engine) as s:
            ids = s.scalars(select(RemovalRow.image_id).where(RemovalRow.generation > generation)).all()
        return np.asarray(ids, dtype=np.int64)

    def ids_by_path(self, paths: Sequence[str]) -> dict[str, int]:
        """path -> image id of those ``paths`` that are indexed."""
        with Session(self._engine) as s:
            return dict(s.execute(select(ImageRow.path, ImageRow.id).where(ImageRow.path.in_(list(paths)))).all())
