"""Zero-shot labels and the tags they put on images (see :mod:`searchindex.enrich.tagging`), and the
labels a person puts on images by hand (:meth:`TagRepository.apply`), marked ``by_user``."""

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
            # A person's tags are their word: tagging replaces only its own.
            zero_shot = (ImageTagRow.label == label.name) & (ImageTagRow.by_user == 0)
            if replace_all:
                s.execute(delete(ImageTagRow).where(zero_shot))
            else:
                ids = [int(i) for i in scored_ids]
                for chunk in chunks(ids):
                    s.execute(delete(ImageTagRow).where(zero_shot, ImageTagRow.image_id.in_(chunk)))
            by_hand = set(s.scalars(select(ImageTagRow.image_id).where(
                ImageTagRow.label == label.name, ImageTagRow.by_user == 1)))
            # Only images still in the catalog: a concurrent delete must not leave orphans.
            alive = alive_ids(s, [int(t[0]) for t in tags])
            s.add_all(ImageTagRow(image_id=int(i), label=label.name, score=float(sc), margin=float(m))
                      for i, sc, m in tags if int(i) in alive and int(i) not in by_hand)

    def apply(self, label: str, ids: Sequence[int]) -> list[int]:
        """Put ``label`` on the images ``ids`` by hand; returns those still in the catalog, now tagged.

        A hand-set tag has score and margin 1 (it lists before any zero-shot tag of the image)
        and replaces a zero-shot tag of the same label on the same image.
        """
        with Session(self._engine) as s, s.begin():
            alive = sorted(alive_ids(s, [int(i) for i in ids]))
            for chunk in chunks(alive):
                s.execute(delete(ImageTagRow).where(ImageTagRow.label == label, ImageTagRow.image_id.in_(chunk)))
            s.add_all(ImageTagRow(image_id=i, label=label, score=1.0, margin=1.0, by_user=1) for i in alive)
        return alive

    def remove(self, names: Sequence[str]) -> int:
        """Forget labels and their tags; return how many labels existed."""
        with Session(self._engine) as s, s.begin():
            n = len(set(s.scalars(select(TagLabelRow.name).where(TagLabelRow.name.in_(list(names)))))
                    | set(s.scalars(select(ImageTagRow.label).where(ImageTagRow.label.in_(list(names)),
                                                                     ImageTagRow.by_user == 1))))
            s.execute(delete(ImageTagRow).where(ImageTagRow.label.in_(list(names))))
            s.execute(delete(TagLabelRow).where(TagLabelRow.name.in_(list(names))))
        return n
