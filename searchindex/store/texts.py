"""Words about images: the texts people wrote (XMP, IPTC, sidecars) and the full-text index over them."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from sqlalchemy import delete, func, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from .migrations import refresh_text_index
from .schema import CaptionRow, ImageTextRow, TextStateRow, alive_ids, executor, texts_by_id

__all__ = ["TextRepository"]

_WORD_RE = re.compile(r"\w+", re.UNICODE)


def _fts_words(query: str) -> list[str]:
    """The words of ``query`` as quoted FTS5 strings (so no word is read as syntax)."""
    return [f'"{w}"' for w in dict.fromkeys(w.lower() for w in _WORD_RE.findall(query))]


class TextRepository:
    """The ``image_texts`` and ``text_states`` tables, and full-text search over ``text_fts``."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def store(self, texts: Mapping[int, Sequence[tuple[str, str]]]) -> None:
        """Replace the image_texts of the given ids with their (source, text) pairs
        (an empty sequence clears them), in one transaction."""
        ids = sorted(int(i) for i in texts)
        with Session(self._engine) as s, s.begin():
            for start in range(0, len(ids), 500):
                s.execute(delete(ImageTextRow).where(ImageTextRow.image_id.in_(ids[start : start + 500])))
            alive = alive_ids(s, ids)
            s.add_all(ImageTextRow(image_id=i, source=source, text=value)
                      for i in ids if i in alive for source, value in dict(texts[i]).items())
            refresh_text_index(executor(s), ids)

    def states(self) -> dict[int, str]:
        """image id -> sidecar signature, for every image whose texts were read."""
        # Plain pairs for every image of a re-run: skip SQLAlchemy's per-row processing.
        with self._engine.connect() as conn:
            return dict(conn.execute(select(TextStateRow.image_id, TextStateRow.sidecars)).cursor.fetchall())

    def store_states(self, states: Mapping[int, str]) -> None:
        """Record that the texts of these images were read, with their sidecars' signatures."""
        ids = sorted(int(i) for i in states)
        with Session(self._engine) as s, s.begin():
            alive = alive_ids(s, ids)
            for i in ids:
                if i in alive:
                    s.merge(TextStateRow(image_id=i, sidecars=states[i]))

    def by_id(self, ids: Iterable[int]) -> dict[int, list[tuple[str, str]]]:
        """image id -> [(source, text)], by source."""
        return texts_by_id(self._engine, ids, ImageTextRow.source, ImageTextRow.text, ImageTextRow.source)

    def has_any(self) -> bool:
        """Whether any image has a caption or a text people wrote."""
        with Session(self._engine) as s:
            return bool(s.scalar(select(func.count()).select_from(select(CaptionRow.image_id).limit(1).subquery()))
                        or s.scalar(select(func.count()).select_from(
                            select(ImageTextRow.image_id).limit(1).subquery())))

    def search(self, query: str, limit: int, ids: np.ndarray | None = None) -> list[tuple[int, float]]:
        """Full-text search over file names, image texts and captions: (image_id, score),
        best first, where score is BM25 negated (higher is better).

        The words of ``query`` are matched as plain terms (no FTS5 syntax reaches
        SQLite, so quotes, ``-`` or ``NEAR`` in user text are just words); images
        with every word come first, and when fewer than ``limit`` have them all,
        images with any of them follow.  ``ids`` restricts the results (filters).
        """
        words = _fts_words(query)
        if not words or limit <= 0:
            return []
        allowed = None if ids is None else set(np.asarray(ids, dtype=np.int64).tolist())
        out: dict[int, float] = {}
        stmt = text(
            "SELECT rowid, bm25(text_fts, 1.0, 2.0, 1.0) FROM text_fts WHERE text_fts MATCH :q ORDER BY 2"
        )
        with Session(self._engine) as s:
            for joiner in (" AND ", " OR ") if len(words) > 1 else (" AND ",):
                ranked = []
                for image_id, bm25 in s.execute(stmt, {"q": joiner.join(words)}):
                    if image_id not in out and (allowed is None or image_id in allowed):
                        ranked.append((int(image_id), -float(bm25)))
                if joiner == " OR " and ranked and out:
                    # OR hits rank below every AND hit, whatever their BM25.
                    shift = ranked[0][1] - min(out.values()) + 1e-6
                    ranked = [(i, score - shift) for i, score in ranked]
                out.update(ranked)
                if len(out) >= limit:
                    break
        return sorted(out.items(), key=lambda kv: -kv[1])[:limit]
