"""Words about images: the texts people wrote (XMP, IPTC, sidecars) and the full-text index over them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from .migrations import refresh_text_index
from .schema import ImageTextRow, TextStateRow, alive_ids, executor
from .sqlite import chunks

__all__ = ["TextRepository"]

class TextRepository:
    """The ``image_texts`` and ``text_states`` tables, and full-text search over ``text_fts``."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def store(self, texts: Mapping[int, Sequence[tuple[str, str]]]) -> None:
        """Replace the image_texts of the given ids with their (source, text) pairs
        (an empty sequence clears them), in one transaction."""
        ids = sorted(int(i) for i in texts)
        with Session(self._engine) as s, s.begin():
            for chunk in chunks(ids):
                s.execute(delete(ImageTextRow).where(ImageTextRow.image_id.in_(chunk)))
            alive = alive_ids(s, ids)
            s.add_all(ImageTextRow(image_id=i, source=source, text=value)
                      for i in ids if i in alive for source, value in dict(texts[i]).items())
            refresh_text_index(executor(s), ids)

    def store_states(self, states: Mapping[int, str]) -> None:
        """Record that the texts of these images were read, with their sidecars' signatures."""
        ids = sorted(int(i) for i in states)
        with Session(self._engine) as s, s.begin():
            alive = alive_ids(s, ids)
            for i in ids:
                if i in alive:
                    s.merge(TextStateRow(image_id=i, sidecars=states[i]))
