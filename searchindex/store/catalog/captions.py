"""Generated captions: one per image and captioning model."""

from __future__ import annotations

import time
from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from .migrations import refresh_text_index
from .schema import CaptionRow, ImageRow, alive_ids, executor

__all__ = ["CaptionRepository"]


class CaptionRepository:
    """The ``captions`` table."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def store(self, rows: Sequence[tuple[int, str, str, str]]) -> None:
        """Save (image_id, model, prompt, text) captions in one transaction, replacing any
        earlier caption of the same image by the same model.  Ids no longer in the
        catalog (deleted meanwhile) are skipped."""
        now = time.time()
        ids = sorted({int(r[0]) for r in rows})
        with Session(self._engine) as s, s.begin():
            alive = alive_ids(s, ids)
            for image_id, model, prompt, caption in rows:
                if int(image_id) in alive:
                    s.merge(CaptionRow(image_id=int(image_id), model=model, prompt=prompt or "",
                                       text=caption, created_at=now))
            refresh_text_index(executor(s), sorted(alive))

    def ids_without(self, model: str) -> list[int]:
        """Ids of images (ascending) with no caption from ``model`` yet."""
        done = select(CaptionRow.image_id).where(CaptionRow.model == model)
        with Session(self._engine) as s:
            return list(s.scalars(select(ImageRow.id).where(ImageRow.id.not_in(done)).order_by(ImageRow.id)))

    def counts(self) -> list[tuple[str, int]]:
        """(model, captioned images) for every captioning model, by model."""
        stmt = select(CaptionRow.model, func.count()).group_by(CaptionRow.model).order_by(CaptionRow.model)
        with Session(self._engine) as s:
            return [(m, int(n)) for m, n in s.execute(stmt)]

    def by_content(self) -> list[tuple[str, str, str, str]]:
        """(sha256, model, prompt, caption) of every caption: what a reindex carries over,
        since a caption describes the picture, whatever model embeds it."""
        stmt = select(ImageRow.sha256, CaptionRow.model, CaptionRow.prompt, CaptionRow.text).join(
            ImageRow, ImageRow.id == CaptionRow.image_id)
        with Session(self._engine) as s:
            return [tuple(r) for r in s.execute(stmt)]  # type: ignore[misc]
