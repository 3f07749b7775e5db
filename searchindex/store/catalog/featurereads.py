"""The reads of what later features hang off an image: the persons whose faces are in it
(``searchindex faces``) and the text read in it (``searchindex ocr``).

Part of the one door: :class:`~searchindex.store.catalog.reader.CatalogReader` inherits them, so
they are read as ``catalog.read.<name>`` like every other read.  Each tolerates a catalog opened
read-only before the migration that made its tables (it then reads as empty).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from typing import Any

import numpy as np

from ...results import TextLine
from .connections import ThreadConnections
from .sqlite import chunks, marks

__all__ = ["FeatureReads"]


class FeatureReads(ThreadConnections):
    """Reads of persons and of text read in photos, and the per-image read they share."""

    def _per_image(self, sql: str, ids: Iterable[int]) -> dict[int, list[Any]]:
        out: dict[int, list[Any]] = {}
        for chunk in chunks([int(i) for i in ids]):
            for image_id, *rest in self._rows(sql.format(marks=marks(len(chunk))), chunk):
                out.setdefault(image_id, []).append(tuple(rest))
        return out

    # -- persons (faces) ----------------------------------------------------

    def ids_with_person(self, name: str) -> np.ndarray | None:
        """Sorted ids of the images showing the person named ``name`` (case-insensitive); ``None``
        when no person has that name (or the catalog has no faces tables)."""
        try:
            found = self._rows("SELECT id FROM persons WHERE lower(name) = lower(?)", (" ".join(name.split()),))
            if not found:
                return None
            rows = self._rows("SELECT DISTINCT image_id FROM faces WHERE person_id = ?", (found[0][0],))
        except sqlite3.OperationalError:  # a catalog opened read-only before its faces migration
            return None
        return np.sort(np.asarray([r[0] for r in rows], dtype=np.int64))

    def named_persons(self) -> list[str]:
        """The names of the named persons (none when the catalog has no faces tables)."""
        try:
            return [r[0] for r in self._rows("SELECT name FROM persons WHERE name IS NOT NULL ORDER BY name")]
        except sqlite3.OperationalError:
            return []

    def person_names(self, ids: Iterable[int]) -> dict[int, list[str]]:
        """image id -> names of the named persons whose faces are in it, left to right."""
        try:
            rows = self._per_image(
                "SELECT f.image_id, p.name FROM faces f JOIN persons p ON p.id = f.person_id "
                "WHERE p.name IS NOT NULL AND p.hidden = 0 AND f.image_id IN ({marks}) ORDER BY f.image_id, f.\"left\"",
                ids)
        except sqlite3.OperationalError:
            return {}
        return {i: [r[0] for r in names] for i, names in rows.items()}

    # -- text read in photos ------------------------------------------------

    def has_ocr(self) -> bool:
        """Whether the catalog has the text-in-photos tables (a read-only catalog may predate them)."""
        return bool(self._rows("SELECT 1 FROM sqlite_master WHERE name = 'ocr_fts'"))

    def ocr_counts(self) -> dict[str, int]:
        """``read`` (images whose text was read), ``with_text`` (of those, with a line) and ``lines``."""
        if not self.has_ocr():  # a read-only catalog from before the ocr tables
            return {"read": 0, "with_text": 0, "lines": 0}
        (read, with_text), = self._rows("SELECT COUNT(*), COALESCE(SUM(lines > 0), 0) FROM ocr_states")
        (lines,), = self._rows("SELECT COUNT(*) FROM ocr_lines")
        return {"read": int(read), "with_text": int(with_text), "lines": int(lines)}

    def ocr_lines(self, ids: Iterable[int]) -> dict[int, list[TextLine]]:
        """image id -> the lines of text read in it, top to bottom (none for images without)."""
        if not self.has_ocr():
            return {}
        rows = self._per_image("SELECT image_id, text, confidence, box, angle, engine FROM ocr_lines "
                               "WHERE image_id IN ({marks}) ORDER BY image_id, line", ids)
        return {i: [TextLine(r[0], float(r[1]), tuple(json.loads(r[2])), int(r[3]), r[4]) for r in lines]
                for i, lines in rows.items()}
