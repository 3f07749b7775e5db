"""Zero-shot labels and the tags they put on images (see :mod:`searchindex.enrich.tagging`)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

import numpy as np
from sqlalchemy import delete, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from .records import TagLabel
from .schema import ImageTagRow, TagLabelRow, alive_ids
from .sqlite import chunks

__all__ = ["TagRepository"]


class TagRepository:
    """The ``tag_labels`` and ``image_tags`` tables."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def store(
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
                for chunk in chunks(ids):
                    s.execute(delete(ImageTagRow).where(
                        ImageTagRow.label == label.name, ImageTagRow.image_id.in_(chunk)))
            # Only images still in the catalog: a concurrent delete must not leave orphans.
            alive = alive_ids(s, [int(t[0]) for t in tags])
            s.add_all(ImageTagRow(image_id=int(i), label=label.name, score=float(sc), margin=float(m))
                      for i, sc, m in tags if int(i) in alive)

    def remove(self, names: Sequence[str]) -> int:
        """Forget labels and their tags; return how many labels existed."""
        with Session(self._engine) as s, s.begin():
            n = len(s.scalars(select(TagLabelRow.name).where(TagLabelRow.name.in_(list(names)))).all())
            s.execute(delete(ImageTagRow).where(ImageTagRow.label.in_(list(names))))
            s.execute(delete(TagLabelRow).where(TagLabelRow.name.in_(list(names))))
        return n
