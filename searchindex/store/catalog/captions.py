"""Generated captions: one per image and captioning model."""

from __future__ import annotations

import time
from collections.abc import Sequence

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from .migrations import refresh_text_index
from .schema import CaptionRow, alive_ids, executor

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
