"""Named, ordered schema migrations of the catalog.

A catalog records its ``schema_version`` in the ``meta`` table.  Opening an
older catalog with write access applies every newer migration in order, each
in its own transaction together with the version bump and a row in
``schema_history``: a crash mid-upgrade leaves the catalog at the last
completed version, and the next open carries on.  A catalog newer than this
code is refused rather than guessed at.

New catalogs are created directly at the latest schema from the ORM models in
:mod:`searchindex.store.catalog.database`; a test checks that migrating the oldest fixture
ends at exactly that schema.  To change the schema: change the models, append a
:class:`Migration` with the next version that turns the previous schema into
the new one, and keep the old fixture test passing.
"""

from __future__ import annotations

import logging
import sqlite3
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ...cjk import index_form, is_cjk
from ...errors import IndexCorruptError, IndexSchemaError
from .ocrindex import add_ocr_tables
from .sqlite import chunks

__all__ = ["FTS_TABLE_SQL", "MIGRATIONS", "SCHEMA_VERSION", "Migration", "pending", "refresh_text_index", "upgrade"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Migration:
    version: int  # the schema version this migration produces
    name: str
    apply: Callable[[sqlite3.Connection], None]


def _photo_metadata(db: sqlite3.Connection) -> None:
    """v2: EXIF date taken, camera, lens, GPS and orientation as image columns.

    Existing rows keep NULLs (``date_source IS NULL``) until the next ``index`` run
    reads their headers; nothing is decoded or re-encoded for that.
    """
    for column, kind in (
        ("taken_at", "VARCHAR"), ("taken_offset", "VARCHAR"), ("date_source", "VARCHAR"),
        ("camera_make", "VARCHAR"), ("camera_model", "VARCHAR"), ("lens", "VARCHAR"),
        ("gps_lat", "FLOAT"), ("gps_lon", "FLOAT"), ("orientation", "INTEGER"),
    ):
        db.execute(f"ALTER TABLE images ADD COLUMN {column} {kind}")
    db.execute("CREATE INDEX ix_images_taken_at ON images (taken_at)")


def _tags(db: sqlite3.Connection) -> None:
    """v3: zero-shot labels with their classifiers and thresholds, and the tags images passed."""
    db.execute(
        "CREATE TABLE tag_labels (name VARCHAR NOT NULL, templates VARCHAR NOT NULL, classifier BLOB NOT NULL, "
        "null_classifier BLOB NOT NULL, threshold FLOAT NOT NULL, calibrated_images INTEGER NOT NULL, "
        "scored_generation INTEGER NOT NULL, created_at FLOAT NOT NULL, PRIMARY KEY (name))"
    )
    db.execute(
        "CREATE TABLE image_tags (image_id INTEGER NOT NULL, label VARCHAR NOT NULL, score FLOAT NOT NULL, "
        "margin FLOAT NOT NULL, PRIMARY KEY (image_id, label))"
    )
    db.execute("CREATE INDEX ix_image_tags_label ON image_tags (label)")


def _filter_indexes(db: sqlite3.Connection) -> None:
    """v4: indexes for search filters (size, camera, position).

    Without them a filter on these columns scans the whole images table, whose
    rows carry the embeddings (2 KB each at 512-d): 240 ms for 100k images
    instead of a few ms (scripts/bench_filters.py).
    """
    db.execute("CREATE INDEX ix_images_width ON images (width)")
    db.execute("CREATE INDEX ix_images_height ON images (height)")
    db.execute("CREATE INDEX ix_images_camera ON images (camera_make, camera_model)")
    db.execute("CREATE INDEX ix_images_gps ON images (gps_lat, gps_lon)")


# Full-text index of what words say about each image (schema 5): rowid = image id.
# ``name`` is the file name, ``keywords`` every image_texts row, ``captions`` every
# caption.  unicode61 splits "IMG_0042-grandma.jpg" into img, 0042, grandma, jpg and
# folds accents ("Müller" matches "muller").
FTS_TABLE_SQL = (
    "CREATE VIRTUAL TABLE text_fts USING fts5(name, keywords, captions, "
    "tokenize = 'unicode61 remove_diacritics 2')"
)

# The last path component, in SQL: strip everything up to the last "/".
_BASENAME = "replace(i.path, rtrim(i.path, replace(i.path, '/', '')), '')"


def refresh_text_index(execute: Callable[[str, dict[str, Any]], Any], ids: Sequence[int] | None) -> None:
    """Rewrite the ``text_fts`` rows of ``ids`` (all images when ``None``) from the catalog.

    ``execute(sql, params)`` runs one statement with named parameters inside the
    caller's transaction (a sqlite3 connection's ``execute``, or a SQLAlchemy
    session's through ``text()``), so the index changes with the rows it reflects.
    An id without an image row just loses its text row.
    """
    fill = (
        "INSERT INTO text_fts (rowid, name, keywords, captions) "
        f"SELECT i.id, {_BASENAME}, "
        "(SELECT group_concat(t.text, ' ') FROM image_texts t WHERE t.image_id = i.id), "
        "(SELECT group_concat(c.text, ' ') FROM captions c WHERE c.image_id = i.id) "
        "FROM images i"
    )
    if ids is None:
        execute("DELETE FROM text_fts", {})
        execute(fill, {})
        _split_cjk(execute, "", {})
        return
    ids = [int(i) for i in ids]
    for chunk in chunks(ids):
        params = {f"p{n}": i for n, i in enumerate(chunk)}
        where = ", ".join(f":{k}" for k in params)
        execute(f"DELETE FROM text_fts WHERE rowid IN ({where})", params)
        execute(f"{fill} WHERE i.id IN ({where})", params)
        _split_cjk(execute, f" WHERE rowid IN ({where})", params)


def _split_cjk(execute: Callable[[str, dict[str, Any]], Any], where: str, params: dict[str, Any]) -> None:
    """Rewrite the rows just filled whose name, keywords or captions hold Korean, Chinese or Japanese
    in :func:`searchindex.cjk.index_form` (overlapping character bigrams), as the text read in photos
    is: a word then matches inside a run written without spaces or with particles attached."""
    rows = execute(f"SELECT rowid, name, keywords, captions FROM text_fts{where}", params).fetchall()
    for rowid, *columns in rows:
        if any(c and is_cjk(c) for c in columns):
            name, keywords, captions = (index_form(c) if c else c for c in columns)
            execute("UPDATE text_fts SET name = :name, keywords = :keywords, captions = :captions WHERE rowid = :id",
                    {"name": name, "keywords": keywords, "captions": captions, "id": int(rowid)})


def _text_search(db: sqlite3.Connection) -> None:
    """v5: captions, text people wrote (XMP/IPTC/sidecars), and a full-text index over them."""
    db.execute(
        "CREATE TABLE captions (image_id INTEGER NOT NULL, model VARCHAR NOT NULL, "
        "prompt VARCHAR DEFAULT '' NOT NULL, text VARCHAR NOT NULL, created_at FLOAT NOT NULL, "
        "PRIMARY KEY (image_id, model))"
    )
    db.execute(
        "CREATE TABLE image_texts (image_id INTEGER NOT NULL, source VARCHAR NOT NULL, text VARCHAR NOT NULL, "
        "PRIMARY KEY (image_id, source))"
    )
    db.execute(FTS_TABLE_SQL)
    refresh_text_index(db.execute, None)  # file names are searchable at once


def _text_states(db: sqlite3.Connection) -> None:
    """v6: which images' texts were read, with their sidecars' signature (name, size, mtime).

    Existing rows get none, so the next ``index`` run reads their keywords (file
    headers and sidecars only); later runs re-read an image's texts when its
    sidecars change while the image does not.
    """
    db.execute(
        "CREATE TABLE text_states (image_id INTEGER NOT NULL, sidecars VARCHAR NOT NULL, PRIMARY KEY (image_id))"
    )


def _index_identity(db: sqlite3.Connection) -> None:
    """v7: a random id for the index, recorded in its vector file too.

    A vector file is used only when it carries the catalog's id (and its
    generation, dimension and count); existing files carry none, so the next
    open rebuilds the vector index from the catalog's embeddings and the next
    ``index`` run saves it with the id.
    """
    db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('index_id', ?)", (uuid.uuid4().hex,))


def _concepts(db: sqlite3.Connection) -> None:
    """v8: saved concepts: a name for a query text with the example images that teach it."""
    db.execute(
        "CREATE TABLE concepts (name VARCHAR NOT NULL, query VARCHAR, like_ids VARCHAR NOT NULL, "
        "unlike_ids VARCHAR NOT NULL, updated_at FLOAT NOT NULL, PRIMARY KEY (name))"
    )


def _faces(db: sqlite3.Connection) -> None:
    """v9: faces found in images (box, score, landmarks, embedding), the persons they are grouped
    into, "not this person" marks, and which images were searched for faces."""
    db.execute(
        "CREATE TABLE persons (id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, name VARCHAR, "
        "hidden INTEGER DEFAULT '0' NOT NULL, "
        "confirmed INTEGER DEFAULT '0' NOT NULL, created_at FLOAT NOT NULL)"
    )
    db.execute("CREATE INDEX ix_persons_name ON persons (name)")
    db.execute(
        "CREATE TABLE faces (id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, image_id INTEGER NOT NULL, "
        "\"left\" INTEGER NOT NULL, "
        "top INTEGER NOT NULL, width INTEGER NOT NULL, height INTEGER NOT NULL, score FLOAT NOT NULL, "
        "quality FLOAT NOT NULL, landmarks VARCHAR NOT NULL, embedding BLOB NOT NULL, person_id INTEGER, "
        "flags INTEGER DEFAULT '0' NOT NULL)"
    )
    db.execute("CREATE INDEX ix_faces_image_id ON faces (image_id)")
    db.execute("CREATE INDEX ix_faces_person_id ON faces (person_id)")
    db.execute(
        "CREATE TABLE face_rejections (face_id INTEGER NOT NULL, person_id INTEGER NOT NULL, "
        "PRIMARY KEY (face_id, person_id))"
    )
    db.execute(
        "CREATE TABLE face_states (image_id INTEGER NOT NULL, sha256 VARCHAR NOT NULL, detector VARCHAR NOT NULL, "
        "faces INTEGER NOT NULL, error VARCHAR, processed_at FLOAT NOT NULL, PRIMARY KEY (image_id))"
    )
def _videos(db: sqlite3.Connection) -> None:
    """v10: videos (an image row each, with its length) and the sampled frames of each, with their
    time and embedding.  Nothing to backfill: videos were not indexed before."""
    db.execute(
        "CREATE TABLE videos (image_id INTEGER NOT NULL, duration FLOAT NOT NULL, codec VARCHAR NOT NULL, "
        "rotation INTEGER NOT NULL, frames INTEGER NOT NULL, PRIMARY KEY (image_id))"
    )
    db.execute(
        "CREATE TABLE video_frames (id INTEGER NOT NULL, image_id INTEGER NOT NULL, time FLOAT NOT NULL, "
        "embedding BLOB NOT NULL, PRIMARY KEY (id))"
    )
    db.execute("CREATE INDEX ix_video_frames_image_id ON video_frames (image_id)")


def _user_tags(db: sqlite3.Connection) -> None:
    """v12: labels a person puts on images by hand sit beside the zero-shot ones, marked so that
    re-tagging never replaces them.  Every existing tag was zero-shot."""
    db.execute("ALTER TABLE image_tags ADD COLUMN by_user INTEGER DEFAULT '0' NOT NULL")


def _cjk_text_index(db: sqlite3.Connection) -> None:
    """v13: file names, keywords and captions in Korean, Chinese or Japanese are indexed as character
    bigrams (schema 11 did so for the text read in photos): the full-text index is written again."""
    refresh_text_index(db.execute, None)


def _schema_history(db: sqlite3.Connection) -> None:
    db.execute(
        "CREATE TABLE IF NOT EXISTS schema_history ("
        "version INTEGER NOT NULL, name VARCHAR NOT NULL, applied_at FLOAT NOT NULL, PRIMARY KEY (version))"
    )


# Version 1 is the first released schema (no migration produces it).
MIGRATIONS: tuple[Migration, ...] = (
    Migration(2, "photo_metadata", _photo_metadata),
    Migration(3, "tags", _tags),
    Migration(4, "filter_indexes", _filter_indexes),
    Migration(5, "text_search", _text_search),
    Migration(6, "text_states", _text_states),
    Migration(7, "index_identity", _index_identity),
    Migration(8, "concepts", _concepts),
    Migration(9, "faces", _faces),
    Migration(10, "videos", _videos),
    Migration(11, "ocr", add_ocr_tables),
    Migration(12, "user_tags", _user_tags),
    Migration(13, "cjk_text_index", _cjk_text_index),
)
SCHEMA_VERSION = MIGRATIONS[-1].version if MIGRATIONS else 1


def _version(db: sqlite3.Connection) -> int:
    """The catalog's schema version (1 when unrecorded: the first schema did not record it).

    Raises:
        IndexCorruptError: the record is not a number, or missing from a catalog that has
            later schemas' columns (so running the migrations again would fail half-way).
    """
    row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if row is None:
        columns = {r[1] for r in db.execute("PRAGMA table_info(images)")}
        if "taken_at" in columns:
            raise IndexCorruptError("the schema_version record is missing")
        return 1
    try:
        return int(row[0])
    except (TypeError, ValueError):
        raise IndexCorruptError(f"the schema_version record is {str(row[0])[:40]!r}, not a number") from None


def pending(db: sqlite3.Connection) -> list[Migration]:
    """Migrations not yet applied to the catalog behind ``db``.

    Raises:
        IndexSchemaError: the catalog was made by a newer searchindex.
    """
    version = _version(db)
    if version > SCHEMA_VERSION:
        raise IndexSchemaError(
            f"this index has schema version {version}, newer than this searchindex understands "
            f"({SCHEMA_VERSION}); upgrade searchindex to use it"
        )
    return [m for m in MIGRATIONS if m.version > version]


def upgrade(db: sqlite3.Connection) -> list[str]:
    """Apply every pending migration, one transaction each; return their names.

    ``db`` must be opened with ``isolation_level=None`` (explicit transactions), so
    that schema changes and the version bump commit or roll back together.
    """
    applied = []
    for migration in pending(db):
        db.execute("BEGIN IMMEDIATE")
        try:
            if _version(db) >= migration.version:  # another process got here first
                db.execute("ROLLBACK")
                continue
            _schema_history(db)
            migration.apply(db)
            db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(migration.version),))
            db.execute("INSERT INTO schema_history VALUES (?, ?, ?)", (migration.version, migration.name, time.time()))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        log.info("catalog upgraded to schema %d (%s)", migration.version, migration.name)
        applied.append(migration.name)
    return applied
