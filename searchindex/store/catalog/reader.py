"""What a search reads from the catalog, through the standard library's :mod:`sqlite3` alone.

A first search in a new process (the CLI, a script) is mostly start-up, and
SQLAlchemy's import alone was about 0.18 s of a 0.6 s cold search on the 2-core
reference machine.  The reads a search needs are few and simple (metadata, rows
and texts by id, embeddings, the full-text ranking), so they are plain SQL here;
writes and the rarer reads stay with SQLAlchemy in the repositories, which
delegate these reads to this one implementation.

Each thread gets its own connection (SQLite connections must not be shared by
threads working at once), opened on first use and closed with the catalog;
a scan of the whole table (catching a vector file up) uses one of its own.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...cjk import fts_terms
from ...results import TextLine
from ...threads import abandon, forks
from .filters import EARTH_RADIUS_KM, Filters, glob_to_sqlite, haversine_km
from .records import RECORD_COLUMNS, ImageRecord, state_key
from .sqlite import ENCODED_FROM, ENCODED_TO, connect, damaged, decode_path, encode_path, glob_bytes, is_damage

__all__ = ["CatalogReader"]

_CHUNK = 500  # ids per statement: under SQLite's limit on bound variables
_WORD_RE = re.compile(r"\w+", re.UNICODE)
_PATH_AT = RECORD_COLUMNS.index("path")


def _chunks(values: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


def _marks(n: int) -> str:
    return ",".join("?" * n)


class _Connection:
    """One thread's connection; its lock is held while a statement runs, so that closing the
    catalog from another thread waits for the statement instead of breaking it."""

    __slots__ = ("db", "lock", "closed", "forks")

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.lock = threading.Lock()
        self.closed = False
        self.forks = forks()  # made in this process, not inherited through fork()


class CatalogReader:
    """Read-only queries on one catalog file, one connection per thread."""

    def __init__(self, path: Path, read_only: bool = False) -> None:
        self.path = path
        self._read_only = read_only
        self._local = threading.local()
        self._open: list[_Connection] = []
        self._guard = threading.Lock()

    def _connection(self) -> _Connection:
        conn: _Connection | None = getattr(self._local, "conn", None)
        if conn is not None and conn.forks != forks():
            self._drop_inherited()
            conn = None
        if conn is None or conn.closed:
            conn = _Connection(connect(self.path, self._read_only))
            with self._guard:
                self._open.append(conn)
            self._local.conn = conn
        return conn

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """All rows of one statement; a damaged file raises the catalog's one damage error."""
        while True:
            conn = self._connection()
            with conn.lock:
                if conn.closed:  # closed by another thread since: open a new one
                    continue
                try:
                    return conn.db.execute(sql, params).fetchall()
                except sqlite3.DatabaseError as exc:
                    if is_damage(exc):
                        raise damaged(self.path, exc) from exc
                    raise

    def _drop_inherited(self) -> None:
        """In a forked child: set aside the connections the parent opened (SQLite: a child must
        neither use nor close them); each thread here opens its own."""
        with self._guard:
            mine = forks()
            for conn in self._open:
                if conn.forks != mine:
                    conn.closed = True
                    abandon(conn.db)
            self._open = [c for c in self._open if c.forks == mine]

    def close(self) -> None:
        """Close every thread's connection (waiting for a statement running on it); a later read
        opens a new one."""
        self._drop_inherited()
        with self._guard:
            conns, self._open = self._open, []
        for conn in conns:
            with conn.lock:
                conn.closed = True
                conn.db.close()

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
        for chunk in _chunks([int(i) for i in ids]):
            for row in self._rows(f"SELECT {columns} FROM images WHERE id IN ({_marks(len(chunk))})", chunk):
                values = list(row)
                values[_PATH_AT] = decode_path(values[_PATH_AT])
                out[values[0]] = ImageRecord(*values)
        return out

    def embeddings(self, ids: Sequence[int], dim: int) -> dict[int, np.ndarray]:
        """image id -> embedding (``dim`` float32) of those ``ids`` still indexed."""
        out: dict[int, np.ndarray] = {}
        for chunk in _chunks([int(i) for i in ids]):
            for i, blob in self._rows(f"SELECT id, embedding FROM images WHERE id IN ({_marks(len(chunk))})", chunk):
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

    def ids_by_path(self, paths: Sequence[str]) -> dict[str, int]:
        """path -> image id of those ``paths`` that are indexed."""
        out: dict[str, int] = {}
        for chunk in _chunks([encode_path(p) for p in paths]):
            for path, i in self._rows(f"SELECT path, id FROM images WHERE path IN ({_marks(len(chunk))})", chunk):
                out[decode_path(path)] = i
        return out

    # -- what hangs off an image ------------------------------------------

    def _per_image(self, sql: str, ids: Iterable[int]) -> dict[int, list[Any]]:
        out: dict[int, list[Any]] = {}
        for chunk in _chunks([int(i) for i in ids]):
            for image_id, *rest in self._rows(sql.format(marks=_marks(len(chunk))), chunk):
                out.setdefault(image_id, []).append(tuple(rest))
        return out

    def tags(self, ids: Iterable[int]) -> dict[int, list[tuple[str, float]]]:
        """image id -> [(label, margin)], strongest first."""
        return self._per_image("SELECT image_id, label, margin FROM image_tags WHERE image_id IN ({marks}) "
                               "ORDER BY image_id, margin DESC, label", ids)

    def tag_counts(self) -> list[tuple[str, int]]:
        """(label, number of tagged images) for every label, including those with none, by label."""
        counts = dict(self._rows("SELECT label, count(*) FROM image_tags GROUP BY label"))
        return [(name, int(counts.get(name, 0))) for (name,) in self._rows("SELECT name FROM tag_labels ORDER BY name")]

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
        words = [f'"{w}"' for w in raw]
        # Text read in photos is indexed as CJK bigrams (searchindex.cjk): its query is split the same way.
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

    def has_ocr(self) -> bool:
        """Whether the catalog has the text-in-photos tables (a read-only catalog may predate them)."""
        return bool(self._rows("SELECT 1 FROM sqlite_master WHERE name = 'ocr_fts'"))

    # -- text read in photos ------------------------------------------------

    def ocr_lines(self, ids: Iterable[int]) -> dict[int, list[TextLine]]:
        """image id -> the lines of text read in it, top to bottom (none for images without)."""
        if not self.has_ocr():
            return {}
        rows = self._per_image("SELECT image_id, text, confidence, box, angle, engine FROM ocr_lines "
                               "WHERE image_id IN ({marks}) ORDER BY image_id, line", ids)
        return {i: [TextLine(r[0], float(r[1]), tuple(json.loads(r[2])), int(r[3]), r[4]) for r in lines]
                for i, lines in rows.items()}

    def ocr_matching(self, text: str) -> np.ndarray:
        """Sorted ids of the images whose read text holds every word of ``text`` (the ``ocr_text`` filter)."""
        terms = [t for w in dict.fromkeys(w.lower() for w in _WORD_RE.findall(text)) for t in fts_terms(w)]
        if not terms or not self.has_ocr():
            return np.zeros(0, np.int64)
        rows = self._rows("SELECT rowid FROM ocr_fts WHERE ocr_fts MATCH ?", [" AND ".join(terms)])
        return np.sort(np.asarray([r[0] for r in rows], dtype=np.int64))


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
