"""The catalog's text-in-photos tables: their creation (the migration) and their word index.

``ocr_lines`` holds one row per line read in an image (text, confidence, box, angle, engine);
``ocr_states`` one row per image whose text was read (with no line when it has none), so a
later run reads only new images and resumes after an interruption; ``ocr_fts`` is an FTS5
index over each image's lines, written in :func:`searchindex.cjk.index_form` (Hangul, kana and
CJK ideographs as overlapping bigrams), one row per image with rowid = image id.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from ...cjk import index_form

__all__ = ["OCR_FTS_SQL", "OCR_TABLES_SQL", "add_ocr_tables", "forget_ocr", "refresh_ocr_index"]

#: The FTS5 table over the read text (see the module docstring); the ORM cannot declare it.
OCR_FTS_SQL = "CREATE VIRTUAL TABLE ocr_fts USING fts5(text, tokenize = 'unicode61 remove_diacritics 2')"

#: The plain tables, exactly as the ORM (schema.py) creates them in a new catalog.
OCR_TABLES_SQL = (
    "CREATE TABLE ocr_lines (image_id INTEGER NOT NULL, line INTEGER NOT NULL, text VARCHAR NOT NULL, "
    "confidence FLOAT NOT NULL, box VARCHAR NOT NULL, angle INTEGER NOT NULL, engine VARCHAR NOT NULL, "
    "PRIMARY KEY (image_id, line))",
    "CREATE TABLE ocr_states (image_id INTEGER NOT NULL, reader VARCHAR NOT NULL, lines INTEGER NOT NULL, "
    "read_at FLOAT NOT NULL, PRIMARY KEY (image_id))",
)


def refresh_ocr_index(execute: Callable[[str, dict[str, Any]], Any], ids: Sequence[int] | None) -> None:
    """Rewrite the ``ocr_fts`` rows of ``ids`` (every image when ``None``) from ``ocr_lines``,
    inside the caller's transaction (``execute`` as for
    :func:`~searchindex.store.catalog.migrations.refresh_text_index`)."""
    if ids is None:
        execute("DELETE FROM ocr_fts", {})
        chunks: list[list[int] | None] = [None]
    else:
        ids = [int(i) for i in ids]
        chunks = [ids[s : s + 500] for s in range(0, len(ids), 500)]
    for chunk in chunks:
        params: dict[str, Any] = {}
        where = "WHERE l.image_id IN (SELECT id FROM images)"
        if chunk is not None:
            params = {f"p{n}": i for n, i in enumerate(chunk)}
            marks = ", ".join(f":{k}" for k in params)
            execute(f"DELETE FROM ocr_fts WHERE rowid IN ({marks})", params)
            where += f" AND l.image_id IN ({marks})"
        rows = execute(f"SELECT l.image_id, l.text FROM ocr_lines l {where} ORDER BY l.image_id, l.line",
                       params).fetchall()
        texts: dict[int, list[str]] = {}
        for image_id, line in rows:
            texts.setdefault(int(image_id), []).append(str(line))
        for image_id, lines in texts.items():
            execute("INSERT INTO ocr_fts (rowid, text) VALUES (:id, :text)",
                    {"id": image_id, "text": index_form("\n".join(lines))})


def add_ocr_tables(db: sqlite3.Connection) -> None:
    """The migration: text read in photos, per line, with the state of each image and a word index."""
    for sql in OCR_TABLES_SQL:
        db.execute(sql)
    db.execute(OCR_FTS_SQL)


def forget_ocr(execute: Callable[[str, dict[str, Any]], Any], ids: Sequence[int]) -> None:
    """Drop the read text of ``ids`` (removed images, or files whose picture changed: read again)."""
    ids = [int(i) for i in ids]
    for start in range(0, len(ids), 500):
        params = {f"p{n}": i for n, i in enumerate(ids[start : start + 500])}
        marks = ", ".join(f":{k}" for k in params)
        for table, column in (("ocr_lines", "image_id"), ("ocr_states", "image_id"), ("ocr_fts", "rowid")):
            execute(f"DELETE FROM {table} WHERE {column} IN ({marks})", params)
