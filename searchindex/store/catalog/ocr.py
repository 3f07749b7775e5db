"""Text read in photos: the writes of ``ocr_lines``, ``ocr_states`` and their word index.

Reads that a search makes (the lines of result images, the word ranking) are in
:class:`~searchindex.store.catalog.reader.CatalogReader`; the tables and the index are
described in :mod:`searchindex.store.catalog.ocrindex`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence

from sqlalchemy import delete, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from ...results import TextLine
from .ocrindex import refresh_ocr_index
from .reader import CatalogReader
from .schema import ImageRow, OcrLineRow, OcrStateRow, VideoRow, alive_ids, executor

__all__ = ["OcrRepository"]


class OcrRepository:
    """The ``ocr_lines`` and ``ocr_states`` tables and the ``ocr_fts`` index."""

    def __init__(self, engine: Engine, reader: CatalogReader) -> None:
        self._engine = engine
        self._read = reader

    def store(self, lines: Mapping[int, Sequence[TextLine]], reader: str) -> None:
        """Replace the lines of the given images (an empty sequence: read, no text) and record
        them as read by ``reader``, in one transaction with their word index.  Ids no longer in
        the catalog (removed meanwhile) are skipped."""
        ids = sorted(int(i) for i in lines)
        now = time.time()
        with Session(self._engine) as s, s.begin():
            for start in range(0, len(ids), 500):
                s.execute(delete(OcrLineRow).where(OcrLineRow.image_id.in_(ids[start : start + 500])))
            alive = alive_ids(s, ids)
            for image_id in ids:
                if image_id not in alive:
                    continue
                found = lines[image_id]
                s.add_all(OcrLineRow(image_id=image_id, line=n, text=ln.text, confidence=float(ln.confidence),
                                     box=json.dumps([round(float(v), 5) for v in ln.box]), angle=int(ln.angle),
                                     engine=ln.engine) for n, ln in enumerate(found))
                s.merge(OcrStateRow(image_id=image_id, reader=reader, lines=len(found), read_at=now))
            s.flush()
            refresh_ocr_index(executor(s), sorted(alive))

    def ids_unread(self) -> list[int]:
        """Ids of images (ascending) whose text was not read yet; videos are not read (their files
        are no pictures: tried, each would fail again at every run, and at every watched batch)."""
        done = select(OcrStateRow.image_id)
        videos = select(VideoRow.image_id)
        with Session(self._engine) as s:
            return list(s.scalars(select(ImageRow.id).where(ImageRow.id.not_in(done), ImageRow.id.not_in(videos))
                                  .order_by(ImageRow.id)))

    def forget(self, ids: Iterable[int] | None = None) -> int:
        """Forget what was read in ``ids`` (every image when ``None``), so the next run reads them
        again; returns how many images had been read."""
        with Session(self._engine) as s, s.begin():
            if ids is None:
                count = int(s.scalar(select(func.count()).select_from(OcrStateRow)) or 0)
                s.execute(delete(OcrLineRow))
                s.execute(delete(OcrStateRow))
                refresh_ocr_index(executor(s), None)
                return count
            id_list = sorted(int(i) for i in ids)
            count = 0
            for start in range(0, len(id_list), 500):
                chunk = id_list[start : start + 500]
                count += int(s.scalar(select(func.count()).select_from(OcrStateRow)
                                      .where(OcrStateRow.image_id.in_(chunk))) or 0)
                s.execute(delete(OcrLineRow).where(OcrLineRow.image_id.in_(chunk)))
                s.execute(delete(OcrStateRow).where(OcrStateRow.image_id.in_(chunk)))
            refresh_ocr_index(executor(s), id_list)
            return count
