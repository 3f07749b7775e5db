"""Every read of the catalog, through the standard library's :mod:`sqlite3` alone: the one door
(:attr:`Catalog.read <searchindex.store.catalog.database.Catalog.read>`) that the package, its
scripts and its tests read through.

A first search in a new process (the CLI, a script) is mostly start-up, and
SQLAlchemy's import alone was about 0.18 s of a 0.6 s cold search on the 2-core
reference machine.  The reads are few and simple (metadata, rows and texts by id,
embeddings, the full-text ranking, what a run compares the files with), so they are
plain SQL here; writes stay with SQLAlchemy in the repositories.

Each thread gets its own connection (:mod:`.connections`), opened on first use and
closed with the catalog; a scan of the whole table (catching a vector file up) uses
one of its own.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from ...cjk import fts_terms, is_cjk
from ...errors import NotFoundError
from ...results import Concept, FailureRecord
from .featurereads import FeatureReads
from .filters import EARTH_RADIUS_KM, Filters, glob_to_sqlite, haversine_km
from .records import RECORD_COLUMNS, ImageRecord, ImageState, TagLabel, state_key
from .sqlite import (
    ENCODED_FROM,
    ENCODED_TO,
    chunks,
    connect,
    damaged,
    decode_path,
    encode_path,
    glob_bytes,
    is_damage,
    marks,
)

__all__ = ["CatalogReader"]

_WORD_RE = re.compile(r"\w+", re.UNICODE)
_PATH_AT = RECORD_COLUMNS.index("path")


class CatalogReader(FeatureReads):
    """Every read of one catalog file, through plain :mod:`sqlite3` (one connection per thread)."""

    # -- metadata ---------------------------------------------------------

    def meta(self) -> dict[str, str]:
        """Every key of the ``meta`` table."""
        return dict(self._rows("SELECT key, value FROM meta"))

    def generation(self) -> int:
        """The generation of the last committed batch."""
        rows = self._rows("SELECT value FROM meta WHERE key = 'generation'")
        return int(rows[0][0]) if rows else 0

    def state(self, generation: int) -> str | None:
        """The random token the batch that made ``generation`` recorded; ``None`` for generations
        committed before tokens were recorded, or pruned (older than the saved vector file)."""
        rows = self._rows("SELECT value FROM meta WHERE key = ?", (state_key(generation),))
        return str(rows[0][0]) if rows else None

    # -- images -----------------------------------------------------------

    def image_ids(self) -> np.ndarray:
        """The ids of every indexed image, sorted."""
        return np.array([r[0] for r in self._rows("SELECT id FROM images ORDER BY id")], dtype=np.int64)

    def records(self, ids: Iterable[int]) -> dict[int, ImageRecord]:
        """image id -> record (without the embedding) of those ``ids`` still indexed."""
        out: dict[int, ImageRecord] = {}
        columns = ", ".join(RECORD_COLUMNS)
        for chunk in chunks([int(i) for i in ids]):
            for row in self._rows(f"SELECT {columns} FROM images WHERE id IN ({marks(len(chunk))})", chunk):
                values = list(row)
                values[_PATH_AT] = decode_path(values[_PATH_AT])
                out[values[0]] = ImageRecord(*values)
        return out

    def embeddings(self, ids: Sequence[int], dim: int) -> dict[int, np.ndarray]:
        """image id -> embedding (``dim`` float32) of those ``ids`` still indexed."""
        out: dict[int, np.ndarray] = {}
        for chunk in chunks([int(i) for i in ids]):
            for i, blob in self._rows(f"SELECT id, embedding FROM images WHERE id IN ({marks(len(chunk))})", chunk):
                out[i] = np.frombuffer(blob, dtype=np.float32).reshape(dim)
        return out

    def embeddings_since(self, generation: int, dim: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, vectors) chunks of every row written after ``generation``, by id."""
        # A scan of the whole table gets a connection of its own, which it closes when done.
        db = connect(self.path, self._read_only)
        try:
            cur = db.execute("SELECT id, embedding FROM images WHERE generation > ? ORDER BY id", (generation,))
            while chunk := cur.fetchmany(10_000):
                ids = np.fromiter((r[0] for r in chunk), dtype=np.int64, count=len(chunk))
                vecs = np.frombuffer(b"".join(r[1] for r in chunk), dtype=np.float32).reshape(len(chunk), dim)
                yield ids, vecs
        except sqlite3.DatabaseError as exc:
            if is_damage(exc):
                raise damaged(self.path, exc) from exc
            raise
        finally:
            db.close()

    def removed_since(self, generation: int) -> np.ndarray:
        """Ids removed by the batches committed after ``generation``."""
        rows = self._rows("SELECT image_id FROM removals WHERE generation > ?", (generation,))
        return np.asarray([r[0] for r in rows], dtype=np.int64)

    def filtered_ids(self, filters: Filters) -> np.ndarray:
        """The ids (sorted) of every image that meets ``filters``, found by one SQL query.

        A position filter is a bounding box in SQL, then the exact great-circle
        distance (NumPy) over the rows inside the box only.
        """
        where, params = self._conditions(filters)
        # No ORDER BY: it would make SQLite walk the table (rows carry the embeddings)
        # in id order instead of using an index on the filtered columns; NumPy sorts.
        if filters.near is None:
            rows = self._rows(f"SELECT id FROM images WHERE {where}", params)
            return np.sort(np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64, count=len(rows)))
        rows = self._rows(f"SELECT id, gps_lat, gps_lon FROM images WHERE {where}", params)
        if not rows:
            return np.zeros(0, dtype=np.int64)
        arr = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.float64, count=3 * len(rows)).reshape(-1, 3)
        lat0, lon0 = filters.near
        keep = haversine_km(arr[:, 1], arr[:, 2], lat0, lon0) <= float(filters.radius_km or 0)
        return np.sort(arr[keep, 0].astype(np.int64))

    def _conditions(self, filters: Filters) -> tuple[str, list[Any]]:
        """The SQL condition (ANDed parts) for ``filters``, with its parameters."""
        conds: list[str] = []
        params: list[Any] = []

        def matches(pattern: str) -> str:
            exact, glob = glob_to_sqlite(pattern, filters.cwd)
            # Names that are not UTF-8 are stored encoded (sqlite.encode_path): the pattern meets
            # their bytes instead, found by the prefix they share (a range of the path index).
            params.extend([encode_path(glob), ENCODED_FROM, ENCODED_TO, glob_bytes(glob)])
            cond = "path GLOB ? OR (path >= ? AND path < ? AND path_bytes(path) GLOB ?)"
            if exact is not None:
                params.append(encode_path(exact))
                cond += " OR path = ?"
            return f"({cond})"

        if filters.paths:
            conds.append("(" + " OR ".join(matches(p) for p in filters.paths) + ")")
        for pattern in filters.exclude:
            conds.append(f"NOT {matches(pattern)}")
        for cond, value in (("width >= ?", filters.min_width or None), ("height >= ?", filters.min_height or None),
                            # taken_at is local wall-clock ISO text: it sorts and compares as text.
                            ("taken_at >= ?", filters.after), ("taken_at < ?", filters.before)):
            if value is not None:
                conds.append(cond)
                params.append(value)
        if filters.cameras:
            # A collection holds a handful of distinct cameras: match the texts against
            # those (read from the camera index), then select the rows by exact value.
            wanted = [c.lower() for c in filters.cameras]
            cameras = self._rows("SELECT DISTINCT camera_make, camera_model FROM images")
            chosen = [(make, model) for make, model in cameras
                      if any(w in f"{make or ''} {model or ''}".lower() for w in wanted)]
            parts = []
            for make, model in chosen:
                parts.append("camera_make IS ? AND camera_model IS ?")
                params.extend([make, model])
            conds.append("(" + " OR ".join(f"({p})" for p in parts) + ")" if parts else "0")
        if filters.near is not None:
            conds += _bounding_box(*filters.near, float(filters.radius_km or 0), params)
        if filters.ocr_text is not None:
            if self.has_ocr():
                conds.append("id IN (SELECT rowid FROM ocr_fts WHERE ocr_fts MATCH ?)")
                params.append(filters.ocr_match())
            else:
                conds.append("0")
        return " AND ".join(conds) or "1", params

    def timeline(self) -> list[tuple[str, int]]:
        """(date, id) of every image, oldest first: the date taken (local wall-clock ISO text),
        else the file's modification time in this machine's local time, in the same form."""
        rows = self._rows("SELECT COALESCE(taken_at, strftime('%Y-%m-%dT%H:%M:%S', mtime_ns / 1e9, 'unixepoch', "
                          "'localtime')), id FROM images")
        return sorted((str(key or ""), int(i)) for key, i in rows)

    def ids_by_path(self, paths: Sequence[str]) -> dict[str, int]:
        """path -> image id of those ``paths`` that are indexed."""
        out: dict[str, int] = {}
        for chunk in chunks([encode_path(p) for p in paths]):
            for path, i in self._rows(f"SELECT path, id FROM images WHERE path IN ({marks(len(chunk))})", chunk):
                out[decode_path(path)] = i
        return out

    def image_count(self) -> int:
        """Number of indexed images."""
        return int(self._rows("SELECT count(*) FROM images")[0][0])

    def image_states(self) -> dict[str, ImageState]:
        """path -> state (id, stat, content hash) of every indexed image: what a run compares the files with."""
        return {decode_path(p): ImageState(i, size, mtime_ns, sha)
                for p, i, size, mtime_ns, sha in self._rows("SELECT path, id, size, mtime_ns, sha256 FROM images")}

    def all_paths(self) -> list[str]:
        """Every path the catalog knows: indexed images (by id), then recorded failures (by path)."""
        rows = self._rows("SELECT path FROM images ORDER BY id") + self._rows("SELECT path FROM failures ORDER BY path")
        return [decode_path(p) for (p,) in rows]

    def ids_without_metadata(self) -> set[int]:
        """Rows whose photo metadata was never read (indexed before schema 2)."""
        return {i for (i,) in self._rows("SELECT id FROM images WHERE date_source IS NULL")}

    def failure_count(self) -> int:
        """Number of recorded failures."""
        return int(self._rows("SELECT count(*) FROM failures")[0][0])

    def failures(self) -> list[FailureRecord]:
        """Every recorded failure, by path."""
        return [FailureRecord(decode_path(p), size, mtime_ns, reason) for p, size, mtime_ns, reason
                in self._rows("SELECT path, size, mtime_ns, reason FROM failures ORDER BY path")]

    def _alive(self, ids: Sequence[int]) -> set[int]:
        """Which of ``ids`` are still image rows."""
        return {i for chunk in chunks([int(i) for i in ids])
                for (i,) in self._rows(f"SELECT id FROM images WHERE id IN ({marks(len(chunk))})", chunk)}

    # -- what hangs off an image ------------------------------------------

    def tags(self, ids: Iterable[int]) -> dict[int, list[tuple[str, float]]]:
        """image id -> [(label, margin)], strongest first."""
        return self._per_image("SELECT image_id, label, margin FROM image_tags WHERE image_id IN ({marks}) "
                               "ORDER BY image_id, margin DESC, label", ids)

    def tag_counts(self) -> list[tuple[str, int]]:
        """(label, number of tagged images) for every label, zero-shot (including those with none) or
        put on images by hand, by label."""
        counts = dict(self._rows("SELECT label, count(*) FROM image_tags GROUP BY label"))
        names = {name for (name,) in self._rows("SELECT name FROM tag_labels")}
        names |= {name for (name,) in self._rows("SELECT DISTINCT label FROM image_tags WHERE by_user = 1")}
        return [(name, int(counts.get(name, 0))) for name in sorted(names)]

    def hand_tags_by_content(self) -> list[tuple[str, str]]:
        """(sha256, label) of every label put on an image by hand: what a reindex carries over."""
        return [tuple(r) for r in self._rows("SELECT i.sha256, t.label FROM image_tags t "
                                             "JOIN images i ON i.id = t.image_id WHERE t.by_user = 1")]

    def ids_tagged(self, label: str) -> np.ndarray:
        """Sorted ids of the images carrying ``label``."""
        return np.sort(np.asarray([r[0] for r in self._rows("SELECT image_id FROM image_tags WHERE label = ?",
                                                              (label,))], dtype=np.int64))

    def captions(self, ids: Iterable[int]) -> dict[int, list[tuple[str, str]]]:
        """image id -> [(model, caption)], oldest caption first."""
        return self._per_image("SELECT image_id, model, text FROM captions WHERE image_id IN ({marks}) "
                               "ORDER BY image_id, created_at", ids)

    def texts(self, ids: Iterable[int]) -> dict[int, list[tuple[str, str]]]:
        """image id -> [(source, text)] people wrote (XMP, IPTC, sidecars), by source."""
        return self._per_image("SELECT image_id, source, text FROM image_texts WHERE image_id IN ({marks}) "
                               "ORDER BY image_id, source", ids)

    def text_states(self) -> dict[int, str]:
        """image id -> sidecar signature, for every image whose texts were read."""
        return dict(self._rows("SELECT image_id, sidecars FROM text_states"))

    def caption_counts(self) -> list[tuple[str, int]]:
        """(model, captioned images) for every captioning model, by model."""
        rows = self._rows("SELECT model, count(*) FROM captions GROUP BY model ORDER BY model")
        return [(m, int(n)) for m, n in rows]

    def ids_without_caption(self, model: str) -> list[int]:
        """Ids of images (ascending) with no caption from ``model`` yet."""
        return [i for (i,) in self._rows("SELECT id FROM images WHERE id NOT IN "
                                         "(SELECT image_id FROM captions WHERE model = ?) ORDER BY id", (model,))]

    def captions_by_content(self) -> list[tuple[str, str, str, str]]:
        """(sha256, model, prompt, caption) of every caption: what a reindex carries over,
        since a caption describes the picture, whatever model embeds it."""
        return [tuple(r) for r in self._rows("SELECT i.sha256, c.model, c.prompt, c.text FROM captions c "
                                             "JOIN images i ON i.id = c.image_id")]

    def tag_labels(self) -> list[TagLabel]:
        """Every stored zero-shot label, by name."""
        return [TagLabel(name, tuple(json.loads(templates)), np.frombuffer(classifier, dtype=np.float32),
                         np.frombuffer(null_classifier, dtype=np.float32), threshold, calibrated, scored)
                for name, templates, classifier, null_classifier, threshold, calibrated, scored in self._rows(
                    "SELECT name, templates, classifier, null_classifier, threshold, calibrated_images, "
                    "scored_generation FROM tag_labels ORDER BY name")]

    # -- saved concepts -----------------------------------------------------

    def concepts(self) -> list[Concept]:
        """Every saved concept, by name; example ids of images removed since are left out."""
        rows = [(name, query, json.loads(like), json.loads(unlike), updated) for name, query, like, unlike, updated
                in self._rows("SELECT name, query, like_ids, unlike_ids, updated_at FROM concepts ORDER BY name")]
        alive = self._alive(sorted({i for r in rows for i in (*r[2], *r[3])}))
        return [Concept(name, query, tuple(i for i in like if i in alive), tuple(i for i in unlike if i in alive),
                        updated) for name, query, like, unlike, updated in rows]

    def concept(self, name: str) -> Concept:
        """The saved concept called ``name``.

        Raises:
            NotFoundError: no concept of that name (the message lists those there are).
        """
        saved = self.concepts()
        for c in saved:
            if c.name == name:
                return c
        known = ", ".join(c.name for c in saved) or "none yet"
        raise NotFoundError(f"no concept named {name!r} (concepts in this index: {known})")

    # -- full text ----------------------------------------------------------

    def text_search(self, query: str, limit: int, ids: np.ndarray | None = None) -> list[tuple[int, float]]:
        """Full-text search over file names, image texts and captions: (image_id, score),
        best first, where score is BM25 negated (higher is better).

        The words of ``query`` are matched as plain terms (no FTS5 syntax reaches
        SQLite, so quotes, ``-`` or ``NEAR`` in user text are just words); images
        with every word come first, and when fewer than ``limit`` have them all,
        images with any of them follow.  ``ids`` restricts the results (filters).
        """
        raw = list(dict.fromkeys(w.lower() for w in _WORD_RE.findall(query)))
        # Korean, Chinese and Japanese are indexed as character bigrams (searchindex.cjk), in both tables:
        # such a query word is split the same way.  Other words stay one quoted term.
        words = ["(" + " ".join(fts_terms(w)) + ")" if is_cjk(w) else f'"{w}"' for w in raw]
        ocr_words = ["(" + " ".join(terms) + ")" for terms in map(fts_terms, raw) if terms]
        if not words or limit <= 0:
            return []
        allowed = None if ids is None else set(np.asarray(ids, dtype=np.int64).tolist())
        out: dict[int, float] = {}
        searches = [("SELECT rowid, bm25(text_fts, 1.0, 2.0, 1.0) FROM text_fts WHERE text_fts MATCH ?", words)]
        if ocr_words and self.has_ocr():
            searches.append(("SELECT rowid, bm25(ocr_fts) FROM ocr_fts WHERE ocr_fts MATCH ?", ocr_words))
        for joiner in (" AND ", " OR ") if len(words) > 1 else (" AND ",):
            hits: dict[int, float] = {}
            for sql, terms in searches:
                # An image whose file name and photo text both hold the word scores both (BM25 adds up).
                for image_id, bm25 in self._rows(sql, [joiner.join(terms)]):
                    hits[int(image_id)] = hits.get(int(image_id), 0.0) - float(bm25)
            ranked = sorted(((i, score) for i, score in hits.items()
                             if i not in out and (allowed is None or i in allowed)), key=lambda kv: (-kv[1], kv[0]))
            if joiner == " OR " and ranked and out:
                # OR hits rank below every AND hit, whatever their BM25.
                shift = ranked[0][1] - min(out.values()) + 1e-6
                ranked = [(i, score - shift) for i, score in ranked]
            out.update(ranked)
            if len(out) >= limit:
                break
        return sorted(out.items(), key=lambda kv: -kv[1])[:limit]



def _bounding_box(lat: float, lon: float, radius_km: float, params: list[Any]) -> list[str]:
    """SQL conditions for a lat/lon box that holds every point within ``radius_km`` of (lat, lon)."""
    dlat = math.degrees(radius_km / EARTH_RADIUS_KM)
    conds = ["gps_lat IS NOT NULL", "gps_lon IS NOT NULL", "gps_lat BETWEEN ? AND ?"]
    params += [lat - dlat, lat + dlat]
    if abs(lat) + dlat >= 90:  # the circle reaches a pole: every longitude
        return conds
    dlon = math.degrees(math.asin(min(1.0, math.sin(radius_km / EARTH_RADIUS_KM) / math.cos(math.radians(lat)))))
    if dlon >= 180:
        return conds
    lo, hi = lon - dlon, lon + dlon
    if lo < -180:  # across the antimeridian: two ranges
        conds.append("(gps_lon >= ? OR gps_lon <= ?)")
        params += [lo + 360, hi]
    elif hi > 180:
        conds.append("(gps_lon >= ? OR gps_lon <= ?)")
        params += [lo, hi - 360]
    else:
        conds.append("gps_lon BETWEEN ? AND ?")
        params += [lo, hi]
    return conds
